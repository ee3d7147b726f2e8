export { memoryBus, type MemoryBusOptions } from './memory-bus.js'
