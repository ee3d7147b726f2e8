import { z } from 'zod'

/**
 * The pipeline file schema. Every default lives here, in one place; units are in key names.
 * Objects are strict: an unknown key (a typo) is an error that names its path.
 */

const positiveInt = z.number().int().positive()
const nonNegativeInt = z.number().int().nonnegative()
const rate = z.number().min(0).max(1)

const stateSchema = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('embedded'),
    /** Folder of the embedded Postgres cluster. @default `<dataDir>/postgres` */
    dir: z.string().optional(),
    schema: z.string().default('proofline'),
  }),
  z.strictObject({
    type: z.literal('postgres'),
    url: z.string().min(1),
    schema: z.string().default('proofline'),
    poolSize: positiveInt.default(10),
  }),
])

const busSchema = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('local'),
    pollIntervalMs: positiveInt.default(200),
  }),
  z.strictObject({
    type: z.literal('memory'),
  }),
  z.strictObject({
    type: z.literal('nats'),
    /** NATS server URLs, e.g. `nats://127.0.0.1:4222`. */
    servers: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]),
    stream: z.string().default('PROOFLINE'),
    subjectPrefix: z.string().default('proofline'),
    duplicateWindowMs: positiveInt.default(600_000),
    replicas: positiveInt.default(1),
    /** Retention of messages in the stream; 0 keeps them until limits apply. */
    maxAgeMs: nonNegativeInt.default(0),
    /** Token auth; prefer the env override `PROOFLINE_BUS__TOKEN`. */
    token: z.string().optional(),
  }),
])

const artifactsSchema = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('fs'),
    /** @default `<dataDir>/artifacts` */
    dir: z.string().optional(),
  }),
  z.strictObject({
    type: z.literal('s3'),
    bucket: z.string().min(1),
    /** Key namespace inside the bucket. */
    prefix: z.string().default('proofline'),
    region: z.string().default('us-east-1'),
    /** An S3-compatible endpoint; AWS's own when absent. */
    endpoint: z.string().optional(),
    forcePathStyle: z.boolean().default(false),
    /** Static credentials; the SDK's default chain (env, profile, instance role) when absent. */
    accessKeyId: z.string().optional(),
    secretAccessKey: z.string().optional(),
    multipartThresholdBytes: positiveInt.default(16 * 1024 * 1024),
    partSizeBytes: positiveInt.default(8 * 1024 * 1024),
    createBucket: z.boolean().default(false),
  }),
])

const costModelSchema = z.strictObject({
  /** cost = base + perGas·gasUsed + perTx·txCount */
  base: z.number().nonnegative().default(0),
  perGas: z.number().nonnegative().default(1),
  perTx: z.number().nonnegative().default(0),
})

const syntheticSourceSchema = z.strictObject({
  type: z.literal('synthetic'),
  /** First block number produced. */
  startBlock: nonNegativeInt.default(1),
  /** Production rate; 0 means as fast as the pipeline accepts. */
  blocksPerSecond: z.number().nonnegative().default(100),
  seed: z.number().int().default(1),
  gas: z
    .strictObject({
      /** Median gas of a block (log-normal body). */
      medianGas: positiveInt.default(2_000_000),
      /** Log-normal shape; larger means a heavier tail. */
      sigma: z.number().nonnegative().default(1.1),
      /** Block gas limit; samples are capped at it. */
      gasLimit: positiveInt.default(30_000_000),
      /** Share of blocks that are (nearly) full, on top of the log-normal body. */
      fullBlockRate: rate.default(0.02),
      /** Average gas per transaction, to derive a transaction count. */
      gasPerTx: positiveInt.default(60_000),
    })
    .prefault({}),
  cost: costModelSchema.prefault({}),
})

const l2SourceSchema = z.strictObject({
  type: z.literal('l2'),
  /** JSON-RPC URL of the L2 node (needs debug_traceBlockByHash for `traces: prestate`). */
  rpcUrl: z.string().min(1),
  /** First block to prove (the block after the oracle's anchor). */
  startBlock: nonNegativeInt.default(1),
  /** How final a block must be before it is proven. */
  safety: z
    .discriminatedUnion('kind', [
      z.strictObject({ kind: z.literal('latest'), confirmations: nonNegativeInt.default(1) }),
      z.strictObject({ kind: z.literal('safe') }),
      z.strictObject({ kind: z.literal('finalized') }),
    ])
    .default({ kind: 'latest', confirmations: 1 }),
  pollIntervalMs: positiveInt.default(1_000),
  maxBlocksPerTick: positiveInt.default(32),
  /** Store a prestate trace per block (`prestate`) or only header, receipts and proofs (`none`). */
  traces: z.enum(['prestate', 'none']).default('prestate'),
  /** Deepest reorg handled; deeper stops the watcher with an error. */
  maxReorgDepth: positiveInt.default(128),
  cost: z
    .strictObject({
      base: z.number().nonnegative().default(0),
      perGas: z.number().nonnegative().default(1),
      perTx: z.number().nonnegative().default(0),
      perTraceByte: z.number().nonnegative().default(0),
    })
    .prefault({}),
})

const sourceSchema = z.discriminatedUnion('type', [syntheticSourceSchema, l2SourceSchema])

const sequentialCollectorSchema = z.strictObject({
  strategy: z.literal('sequential'),
  /** First key of the first group. @default the source's startBlock */
  startKey: nonNegativeInt.optional(),
  /** Close when the group has this many inputs. */
  maxCount: positiveInt.optional(),
  /** Close when summed input cost reaches this (capacity-aware packing). */
  capacity: z.number().positive().optional(),
  /** Close what is contiguous once the oldest input has waited this long. */
  timeoutMs: positiveInt.optional(),
})

const matchCollectorSchema = z.strictObject({
  strategy: z.literal('match'),
  /** Fields of the message data that must be equal to join. */
  fields: z.array(z.string().min(1)).min(1),
  /** Close when this many distinct inputs arrived. */
  inputs: positiveInt,
  /** Data field that tells inputs apart (e.g. `stage`); by message id when absent. */
  sourceField: z.string().optional(),
  timeoutMs: positiveInt.optional(),
})

const collectorSchema = z.discriminatedUnion('strategy', [sequentialCollectorSchema, matchCollectorSchema])

const processExecutorSchema = z.strictObject({
  type: z.literal('process'),
  /** argv of the prover binary; relative paths resolve against the config file's folder. */
  command: z.array(z.string().min(1)).min(1),
  protocol: z.enum(['files', 'stdio']).default('files'),
  timeoutMs: positiveInt.default(600_000),
  killGraceMs: positiveInt.default(2_000),
  env: z.record(z.string(), z.string()).default({}),
  heartbeatMs: positiveInt.default(5_000),
  stderrTailBytes: positiveInt.default(8_192),
})

const mockExecutorSchema = z.strictObject({
  type: z.literal('mock'),
  latencyMs: z.strictObject({ min: nonNegativeInt, max: nonNegativeInt }).default({ min: 0, max: 0 }),
  failureRate: rate.default(0),
  hostileRate: rate.default(0),
  seed: z.number().int().default(1),
})

const builtinExecutorSchema = z.strictObject({
  type: z.literal('builtin'),
  /** Which built-in program the stage proves: `range` (blocks in) or `aggregate` (range proofs in). Settings: the top-level `prover` section. */
  program: z.enum(['range', 'aggregate']),
  /** Interval of heartbeats while proving. */
  heartbeatMs: positiveInt.default(5_000),
})

const hex32 = z.string().regex(/^0x[0-9a-fA-F]{64}$/, '32 bytes as 0x + 64 hex digits')

/** The built-in backend (Noir + UltraHonk) that `builtin` executors and `verify: builtin` use; see docs/proving.md. */
const proverSchema = z.strictObject({
  /** Blocks one range proof covers (the range circuit's slots; unused slots are padded). */
  blocksPerRange: positiveInt.max(64).default(2),
  /** Range proofs one aggregate proof covers (the aggregate circuit's slots). */
  aggregateK: positiveInt.max(8).default(2),
  /** The L2 chain configuration hash proofs commit to (the OutputOracle's CHAIN_CONFIG_HASH). */
  chainConfigHash: hex32,
  /** Where compiled circuits, keys, verifiers and a development CRS are cached. @default $PROOFLINE_CACHE_DIR or ~/.cache/proofline */
  cacheDir: z.string().optional(),
  /** Threads bb may use. @default all cores */
  threads: positiveInt.optional(),
  crs: z
    .strictObject({
      /** `dev`: generated here once (dev chains only); `ignition`: Aztec's ceremony file at `path`. */
      kind: z.enum(['dev', 'ignition']).default('dev'),
      /** Points needed: 2^21 + 1 serves the K = 2 aggregate circuit. */
      points: positiveInt.default(2 ** 21 + 1),
      /** `ignition`: the folder holding bn254_g1.dat. */
      path: z.string().optional(),
      /** sha256 of bn254_g1.dat every prover must use; a dev CRS missing locally is fetched from the artifact store. */
      sha256: z.string().regex(/^[0-9a-fA-F]{64}$/).optional(),
    })
    .prefault({}),
})

const httpExecutorSchema = z
  .strictObject({
    type: z.literal('http'),
    /** Base URL of a prover service speaking proofline.prover-api/v1 (docs/executor-protocol.md, HTTP). */
    url: z.string().url(),
    /** Bearer token; prefer `tokenEnv` or the env override `PROOFLINE_STAGES__<STAGE>__EXECUTOR__TOKEN`. */
    token: z.string().min(1).optional(),
    /** Name of an environment variable holding the bearer token. */
    tokenEnv: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'an environment variable name').optional(),
    /** Overall deadline of one remote request, from its submission; then it is cancelled (`timeout`). */
    timeoutMs: positiveInt.default(3_600_000),
    /** Deadline of each HTTP call. */
    requestTimeoutMs: positiveInt.default(30_000),
    pollIntervalMs: positiveInt.default(2_000),
    maxPollIntervalMs: positiveInt.default(30_000),
    /** Consecutive failed polls before the attempt fails `transient` (the request is resumed by the retry). */
    maxPollErrors: positiveInt.default(5),
    submitRetries: nonNegativeInt.default(2),
    heartbeatMs: positiveInt.default(5_000),
    /** Send the artifacts inputs reference (traces, inner proofs) inside the submit body. */
    inlineArtifacts: z.boolean().default(true),
    maxRequestBytes: positiveInt.default(64 * 1024 * 1024),
    maxResponseBytes: positiveInt.default(64 * 1024 * 1024),
    /** Allow the token over plain http to a non-loopback host. */
    allowInsecureHttp: z.boolean().default(false),
  })
  .refine((e) => !(e.token !== undefined && e.tokenEnv !== undefined), { message: 'set token or tokenEnv, not both', path: ['tokenEnv'] })
  .refine((e) => e.tokenEnv === undefined || !e.tokenEnv.startsWith('PROOFLINE_'), {
    message: 'PROOFLINE_* variables are config overrides; name another variable (or use PROOFLINE_STAGES__<STAGE>__EXECUTOR__TOKEN without tokenEnv)',
    path: ['tokenEnv'],
  })

/** Where a zkVM host puts some bytes: a file in its output folder, or a field of its output JSON. */
const zkvmBytesSchema = z
  .strictObject({
    file: z.string().min(1).optional(),
    field: z.string().min(1).optional(),
    encoding: z.enum(['hex', 'base64']).default('hex'),
  })
  .refine((b) => (b.file === undefined) !== (b.field === undefined), { message: 'set exactly one of file, field' })

const failureClassSchema = z.enum(['transient', 'timeout', 'too-big', 'unprovable', 'invalid-output'])

const zkvmExecutorSchema = z.strictObject({
  type: z.literal('zkvm'),
  /** The zkVM family; picks the stderr patterns of its failures (docs/zkvm.md). */
  vm: z.enum(['sp1', 'risc0', 'custom']),
  /** argv of the host with placeholders ({input}, {outputDir}, {elf}, {first}, …); `./` paths resolve against the file's folder. */
  command: z.array(z.string().min(1)).min(1),
  program: z.strictObject({
    /** Guest ELF (range or aggregation program); relative to the config file. */
    elf: z.string().min(1).optional(),
    /** Verification key id the host must report (SP1 vkey hash, RISC Zero image id), hex. */
    vkey: z.string().min(1),
  }),
  input: z
    .strictObject({
      format: z.enum(['json', 'proofline']).default('json'),
      file: z.string().min(1).default('input.json'),
      /** Host field → selector into { job, inputs, program }; a trailing `@file` materialises artifact refs. */
      fields: z.record(z.string(), z.string().min(1)).default({}),
    })
    .prefault({}),
  output: z.strictObject({
    file: z.string().min(1).default('output.json'),
    proof: zkvmBytesSchema,
    publicValues: zkvmBytesSchema,
    vkey: zkvmBytesSchema,
    /** ABI parameters of the public values, e.g. `bytes32 l2PreRoot, bytes32 l2PostRoot, uint64 l2BlockNumber`. */
    publicValuesAbi: z.string().min(1).optional(),
    /** proofline output field → selector into the host's output JSON. */
    fields: z.record(z.string(), z.string().min(1)).default({}),
  }),
  /** Host exit code → failure class, checked first. */
  exitCodes: z.record(z.string().regex(/^\d+$/, 'an exit code'), failureClassSchema).default({}),
  /** stderr regular expressions → failure class, checked after exitCodes and before the vm presets. */
  errorPatterns: z.array(z.strictObject({ match: z.string().min(1), class: failureClassSchema })).default([]),
  timeoutMs: positiveInt.default(3_600_000),
  killGraceMs: positiveInt.default(10_000),
  env: z.record(z.string(), z.string()).default({}),
  heartbeatMs: positiveInt.default(5_000),
  stderrTailBytes: positiveInt.default(8_192),
})

/** The executors a shadow executor can pair (not another shadow). */
const innerExecutorSchema = z.discriminatedUnion('type', [processExecutorSchema, mockExecutorSchema, httpExecutorSchema, zkvmExecutorSchema, builtinExecutorSchema])

const shadowExecutorSchema = z.strictObject({
  type: z.literal('shadow'),
  /** The executor whose result counts. */
  primary: innerExecutorSchema,
  /** The executor on trial: runs on the same jobs; its outcome is only recorded. */
  shadow: innerExecutorSchema,
  /** Output fields compared (selectors); empty = every field of either output except `ignore`. */
  compare: z.array(z.string().min(1)).default([]),
  ignore: z.array(z.string().min(1)).default(['vm', 'vkey', 'publicValues', 'cycles']),
  /** A shadow run still going this long is aborted and recorded as failed. */
  shadowTimeoutMs: positiveInt.default(3_600_000),
  /** Shadow runs at once; a job arriving while this many run is not shadowed (recorded as skipped). */
  maxInFlight: positiveInt.default(2),
  /** Cost per hour of each side, when an executor reports no cost of its own. */
  cost: z
    .strictObject({
      primaryPerHour: z.number().nonnegative().optional(),
      shadowPerHour: z.number().nonnegative().optional(),
    })
    .prefault({}),
})

const executorSchema = z.discriminatedUnion('type', [processExecutorSchema, mockExecutorSchema, httpExecutorSchema, zkvmExecutorSchema, builtinExecutorSchema, shadowExecutorSchema])

const stageSchema = z.strictObject({
  /** Stage name; jobs go out on `jobs.<name>`, results come back on `results.<name>`. */
  name: z.string().regex(/^[a-z][a-z0-9-]*$/, 'lowercase letters, digits and dashes, starting with a letter'),
  /** Subject this stage's collector consumes (`blocks` or an earlier stage's `output`). */
  input: z.string().min(1),
  /** Subject the stage publishes succeeded results on. @default `proofs.<name>` */
  output: z.string().min(1).optional(),
  /** Program / vkey id of the prover; part of every job id. */
  programId: z.string().min(1).default('mock-v1'),
  /**
   * How results are checked before they are believed. `mock` recomputes the mock commitment;
   * `builtin` verifies the built-in backend's proof and checks its public values against the
   * job (docs/proving.md).
   */
  verify: z.enum(['mock', 'builtin']).default('mock'),
  collector: collectorSchema,
  executor: executorSchema,
  dispatch: z
    .strictObject({
      /** Run a dispatcher for this stage inside the orchestrator. */
      inProcess: z.boolean().default(true),
      /** Jobs run at once by the in-process dispatcher. */
      concurrency: positiveInt.default(2),
      /** Bus lease of a job message; extended by heartbeats while the executor runs. */
      ackWaitMs: positiveInt.default(30_000),
      /**
       * Worker pools in priority order. The first takes every job; a job still waiting after a
       * later pool's `overflowAfterMs` moves to that pool (e.g. own cluster, then cloud, then a
       * proving partner). The in-process dispatcher serves the first pool.
       */
      pools: z
        .array(
          z.strictObject({
            name: z.string().regex(/^[a-z][a-z0-9-]*$/, 'lowercase letters, digits and dashes, starting with a letter'),
            overflowAfterMs: positiveInt.optional(),
          }),
        )
        .min(1)
        .default([{ name: 'default' }]),
      /** Labels a worker must have to take this stage's jobs (e.g. `gpu`). */
      requireLabels: z.array(z.string().min(1)).default([]),
    })
    .prefault({}),
  retry: z
    .strictObject({
      maxAttempts: positiveInt.default(5),
      backoffMs: nonNegativeInt.default(1_000),
      maxBackoffMs: nonNegativeInt.default(60_000),
      /** Within this many attempts a retry avoids the worker that failed it. */
      avoidFailedWorkerAttempts: nonNegativeInt.default(2),
    })
    .prefault({}),
  /** A running job whose heartbeats stop for this long is failed as `lease-expired`. */
  leaseMs: positiveInt.default(120_000),
})

export const configSchema = z
  .strictObject({
    version: z.literal(1),
    /** A name for logs and the API. */
    name: z.string().default('proofline'),
    /** Folder for embedded state, artifacts and executor scratch; relative to the config file. */
    dataDir: z.string().default('.proofline'),
    state: stateSchema.default({ type: 'embedded', schema: 'proofline' }),
    bus: busSchema.default({ type: 'local', pollIntervalMs: 200 }),
    artifacts: artifactsSchema.default({ type: 'fs' }),
    source: sourceSchema,
    stages: z.array(stageSchema).min(1),
    /** The built-in prover backend; needed by `builtin` executors and `verify: builtin`. */
    prover: proverSchema.optional(),
    api: z
      .strictObject({
        enabled: z.boolean().default(true),
        host: z.string().default('127.0.0.1'),
        /** 0 picks a free port; the URL is written to `<dataDir>/api.json`. */
        port: nonNegativeInt.max(65535).default(0),
        /** Bearer token for admin actions; generated into `<dataDir>/api.json` when absent. */
        token: z.string().min(16).optional(),
        /** How long a computed pipeline snapshot is reused by `/metrics`, `/pipeline` and the dashboard. */
        snapshotMaxAgeMs: nonNegativeInt.default(1_000),
        /** How often the dashboard's history (throughput, latency, lag) is sampled. */
        sampleIntervalMs: positiveInt.min(100).default(2_000),
        /** History samples kept in memory (300 × 2 s = 10 minutes). */
        historySamples: positiveInt.default(300),
      })
      .prefault({}),
    proposer: z
      .strictObject({
        /** L1 JSON-RPC URLs; the tx manager fails over between them. */
        l1RpcUrls: z.array(z.string().min(1)).min(1),
        /** The OutputOracle's address. */
        oracle: z.string().regex(/^0x[0-9a-fA-F]{40}$/, 'an address (0x + 40 hex)'),
        /** L2 node the output roots are re-derived from. @default source.rpcUrl (l2 source) */
        l2RpcUrl: z.string().min(1).optional(),
        /** The stage whose results are proposed. @default the last stage */
        stage: z.string().optional(),
        intervalMs: positiveInt.default(300_000),
        /** L1 confirmations before a proposal counts (1 = mined). */
        confirmations: positiveInt.default(3),
        /**
         * L2 depth a proven block must have before it is proposed (`head − block + 1`; 1 = it
         * exists). A proposal is final on L1, so set it above the deepest L2 reorg you expect
         * (e.g. 65 when reorgs can be 64 deep); the watcher re-proves reorged blocks either way.
         */
        l2Confirmations: positiveInt.default(1),
        feeBumpPercent: z.number().min(10).default(12.5),
        resubmitAfterMs: positiveInt.default(30_000),
        maxFeePerGasGwei: z.number().positive().default(500),
        /** Encrypted JSON keystore; its password in PROPOSER_KEYSTORE_PASSWORD. Without it, PROPOSER_PRIVATE_KEY. */
        keystorePath: z.string().optional(),
        /**
         * How proof bytes are built: `mock` sends none (the oracle's MockVerifier, dev chains
         * only); `builtin` sends the aggregate stage's UltraHonk proof from the artifact store.
         */
        proof: z.enum(['mock', 'builtin']).default('mock'),
      })
      .optional(),
    leader: z
      .strictObject({
        /**
         * Leader lease of an orchestrator on a shared Postgres (`state.type: postgres`): a
         * leader that cannot renew within it is replaced, and its later writes are refused.
         */
        leaseMs: positiveInt.min(1_000).default(15_000),
      })
      .prefault({}),
    log: z
      .strictObject({
        level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
      })
      .prefault({}),
  })
  .superRefine((cfg, ctx) => {
    if (cfg.proposer) {
      if (cfg.proposer.stage !== undefined && !cfg.stages.some((s) => s.name === cfg.proposer?.stage)) {
        ctx.addIssue({ code: 'custom', path: ['proposer', 'stage'], message: `no stage named "${cfg.proposer.stage}"` })
      }
      if (cfg.proposer.l2RpcUrl === undefined && cfg.source.type !== 'l2') {
        ctx.addIssue({ code: 'custom', path: ['proposer', 'l2RpcUrl'], message: 'needed to re-derive output roots when the source is not an L2 node' })
      }
    }
    const needsProver = cfg.stages.some((s) => s.verify === 'builtin' || s.executor.type === 'builtin' || (s.executor.type === 'shadow' && (s.executor.primary.type === 'builtin' || s.executor.shadow.type === 'builtin')))
    if (needsProver && cfg.prover === undefined) {
      ctx.addIssue({ code: 'custom', path: ['prover'], message: 'a builtin executor or verify: builtin needs the prover section (at least prover.chainConfigHash)' })
    }
    const names = new Set<string>()
    const outputs = new Set<string>(['blocks'])
    cfg.stages.forEach((stage, i) => {
      if (names.has(stage.name)) {
        ctx.addIssue({ code: 'custom', path: ['stages', i, 'name'], message: `duplicate stage name "${stage.name}"` })
      }
      names.add(stage.name)
      if (!outputs.has(stage.input)) {
        ctx.addIssue({
          code: 'custom',
          path: ['stages', i, 'input'],
          message: `"${stage.input}" is not produced by the source or an earlier stage (known: ${[...outputs].join(', ')})`,
        })
      }
      outputs.add(stage.output ?? `proofs.${stage.name}`)
      stage.dispatch.pools.forEach((pool, p) => {
        if (p > 0 && pool.overflowAfterMs === undefined) {
          ctx.addIssue({ code: 'custom', path: ['stages', i, 'dispatch', 'pools', p, 'overflowAfterMs'], message: 'every pool after the first needs overflowAfterMs' })
        }
        if (p === 0 && pool.overflowAfterMs !== undefined) {
          ctx.addIssue({ code: 'custom', path: ['stages', i, 'dispatch', 'pools', 0, 'overflowAfterMs'], message: 'the first pool takes every job at once; overflowAfterMs belongs on later pools' })
        }
      })
      const c = stage.collector
      if (c.strategy === 'sequential' && c.maxCount === undefined && c.capacity === undefined && c.timeoutMs === undefined) {
        ctx.addIssue({ code: 'custom', path: ['stages', i, 'collector'], message: 'a sequential collector needs at least one of maxCount, capacity, timeoutMs' })
      }
    })
  })

/** The pipeline file as written (before defaults). */
export type RawConfig = z.input<typeof configSchema>
/** The validated config with every default filled in. */
export type ParsedConfig = z.output<typeof configSchema>
export type StageConfig = ParsedConfig['stages'][number]
export type ExecutorConfig = StageConfig['executor']
export type CollectorConfig = StageConfig['collector']
export type SourceConfig = ParsedConfig['source']
export type ProverConfig = NonNullable<ParsedConfig['prover']>
