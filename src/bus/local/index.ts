export { localBus, type LocalBus, type LocalBusOptions } from './local-bus.js'
export { BUS_SCHEMA_VERSION, migrateBus } from './schema.js'
