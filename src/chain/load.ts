/**
 * A transaction load for the dev L2: ETH transfers, calls of varied gas to a small storage
 * "burner" contract, and withdrawals through the L2ToL1MessagePasser at OP's predeploy
 * address, so blocks differ in gas and the message passer's storage root changes. Seeded:
 * the same seed gives the same sequence of transaction kinds, sizes and recipients.
 */
import { createPublicClient, encodeFunctionData, http, keccak256, toHex, type Address, type Hex } from 'viem'
import { privateKeyToAccount, type PrivateKeyAccount } from 'viem/accounts'
import { l2ToL1MessagePasserAbi } from '../contracts/abis.js'
import { l2ToL1MessagePasserDeployedBytecode } from '../contracts/bytecode.js'
import { errorMessage } from '../core/errors.js'
import { chainRpc, hexToSafeNumber, MESSAGE_PASSER_ADDRESS, rpcRequest, type ChainRpc } from './traces.js'
import { mulberry32 } from '../core/random.js'

/**
 * The private keys of anvil's first ten default accounts (the well-known "test test … junk"
 * mnemonic). Public knowledge: for dev chains only.
 */
export const ANVIL_DEV_KEYS: readonly Hex[] = [
  '0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80',
  '0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d',
  '0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a',
  '0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6',
  '0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a',
  '0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba',
  '0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e',
  '0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356',
  '0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97',
  '0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6',
]

// ---------------------------------------------------------------------------------------------
// A tiny assembler, so the burner's bytecode below reads as opcodes rather than hex.

const OPCODES: Record<string, number> = {
  STOP: 0x00,
  SUB: 0x03,
  ISZERO: 0x15,
  AND: 0x16,
  CALLDATALOAD: 0x35,
  CODECOPY: 0x39,
  SSTORE: 0x55,
  JUMP: 0x56,
  JUMPI: 0x57,
  GAS: 0x5a,
  JUMPDEST: 0x5b,
  PUSH1: 0x60,
  DUP1: 0x80,
  DUP2: 0x81,
  SWAP1: 0x90,
  RETURN: 0xf3,
}

/**
 * Assembles lines of `OPCODE`, `PUSH1 0xNN`, `PUSH1 @label` and `label:` into bytecode.
 * Only what the burner needs: one-byte pushes, labels below 256.
 */
export function assemble(lines: readonly string[]): Hex {
  const labels = new Map<string, number>()
  // Pass 1: label offsets (every instruction's size is known: PUSH1 is 2 bytes, others 1).
  let pc = 0
  for (const line of lines) {
    const [op] = line.trim().split(/\s+/)
    if (op === undefined || op === '') continue
    if (op.endsWith(':')) labels.set(op.slice(0, -1), pc)
    else pc += op === 'PUSH1' ? 2 : 1
  }
  const out: number[] = []
  for (const line of lines) {
    const [op, arg] = line.trim().split(/\s+/)
    if (op === undefined || op === '' || op.endsWith(':')) continue
    const code = OPCODES[op]
    if (code === undefined) throw new Error(`assemble: unknown opcode ${op}`)
    out.push(code)
    if (op === 'PUSH1') {
      if (arg === undefined) throw new Error('assemble: PUSH1 needs an argument')
      const value = arg.startsWith('@') ? labels.get(arg.slice(1)) : Number(arg)
      if (value === undefined || !Number.isInteger(value) || value < 0 || value > 0xff) throw new Error(`assemble: bad PUSH1 argument ${arg}`)
      out.push(value)
    }
  }
  return toHex(Uint8Array.from(out))
}

/**
 * The burner's runtime code. Calldata word 0 is `n` (taken mod 256); it writes `gasleft()` into
 * storage slots n, n−1, …, 1. The value differs on every call, so each slot write is a real
 * SSTORE (22.1k gas the first time, ~5k after): gas grows linearly with `n`.
 */
export const BURNER_RUNTIME: Hex = assemble([
  'PUSH1 0x00',
  'CALLDATALOAD', //          [n]  first calldata word
  'PUSH1 0xff',
  'AND', //                   [n]  n mod 256, so a call's gas is bounded
  'loop:',
  'JUMPDEST',
  'DUP1',
  'ISZERO',
  'PUSH1 @end',
  'JUMPI', //                 [n]  done when n == 0
  'GAS',
  'DUP2',
  'SSTORE', //                [n]  storage[n] = gasleft()
  'PUSH1 0x01',
  'SWAP1',
  'SUB', //                   [n-1]
  'PUSH1 @loop',
  'JUMP',
  'end:',
  'JUMPDEST',
  'STOP',
])

/** Creation code: copies the runtime that follows this 11-byte prefix into memory and returns it. */
export const BURNER_INITCODE: Hex = (() => {
  const runtimeLength = (BURNER_RUNTIME.length - 2) / 2
  const prefix = assemble([
    `PUSH1 ${runtimeLength}`, // [len]
    'DUP1', //                   [len len]
    'PUSH1 0x0b', //             [11 len len]  runtime starts after this 11-byte prefix
    'PUSH1 0x00', //             [0 11 len len]
    'CODECOPY', //               [len]         memory[0..len] = code[11..11+len]
    'PUSH1 0x00', //             [0 len]
    'RETURN', //                                return memory[0..len]
  ])
  if ((prefix.length - 2) / 2 !== 11) throw new Error('burner initcode prefix must be 11 bytes')
  return `${prefix}${BURNER_RUNTIME.slice(2)}` as Hex
})()

/** Calldata for a burner call that writes `slots` storage slots (1..255). */
export function burnerCalldata(slots: number): Hex {
  return toHex(BigInt(slots), { size: 32 })
}

type RpcLike = ChainRpc | { request: (...args: never[]) => Promise<unknown> }

const asRpc = (client: RpcLike): ChainRpc => chainRpc(client as { request: (...args: never[]) => Promise<unknown> })

/**
 * Places the development L2ToL1MessagePasser (src/contracts/L2ToL1MessagePasser.sol: OP's
 * interface, event and storage layout) at the predeploy address with `anvil_setCode`, so
 * withdrawals write its storage and the output root's storage root is not the empty trie.
 * Idempotent. Only for anvil (or nodes with `anvil_setCode`/`hardhat_setCode`); a real OP
 * chain already has the predeploy.
 */
export async function installMessagePasser(client: RpcLike, opts: { signal?: AbortSignal } = {}): Promise<Address> {
  const rpc = asRpc(client)
  const ro = opts.signal ? { signal: opts.signal } : {}
  const code = (await rpcRequest(rpc, 'eth_getCode', [MESSAGE_PASSER_ADDRESS, 'latest'], ro)) as Hex
  if (code.toLowerCase() === l2ToL1MessagePasserDeployedBytecode.toLowerCase()) return MESSAGE_PASSER_ADDRESS
  await rpcRequest(rpc, 'anvil_setCode', [MESSAGE_PASSER_ADDRESS, l2ToL1MessagePasserDeployedBytecode], {
    ...ro,
    unsupportedHint: 'installMessagePasser needs anvil (anvil_setCode); a real OP Stack L2 already has the predeploy',
  })
  return MESSAGE_PASSER_ADDRESS
}


/** The kinds of transaction the load sends. */
export type LoadTxKind = 'transfer' | 'call' | 'withdrawal'

/** Options of {@link startLoad}. Give exactly one of `txPerBlock` and `txPerSecond`. */
export interface LoadOptions {
  rpcUrl: string
  /** Senders, e.g. {@link ANVIL_DEV_KEYS}; each keeps its own nonce. */
  privateKeys: readonly Hex[]
  /**
   * The generator mines: it turns anvil's automine off, sends this many transactions, calls
   * `evm_mine`, waits `blockIntervalMs`, and restores automine when it stops. Anvil only.
   */
  txPerBlock?: number
  /** Sends at this rate and leaves mining to the node (automine or `--block-time`). */
  txPerSecond?: number
  /**
   * Pause between mined blocks in `txPerBlock` mode.
   * @default 1000
   */
  blockIntervalMs?: number
  seed: number
  /** Stops the load. */
  signal: AbortSignal
  /**
   * Relative weights of the transaction kinds.
   * @default { transfer: 4, call: 4, withdrawal: 2 }
   */
  mix?: Record<LoadTxKind, number>
  /**
   * Most storage slots one burner call writes (1..255); sizes are skewed towards small.
   * @default 64
   */
  maxSlotsPerCall?: number
  /** An already-deployed burner (see `BURNER_INITCODE`); deployed at start when absent. */
  burner?: Address
  log?: { warn(obj: Record<string, unknown>, msg: string): void }
}

/** Counters of a running load. */
export interface LoadStats {
  sent: number
  failed: number
  byKind: Record<LoadTxKind, number>
  /** Blocks mined by the generator (`txPerBlock` mode). */
  blocksMined: number
  lastError: string | null
}

/** A running load generator. */
export interface LoadGenerator {
  /** The burner contract the calls go to. */
  readonly burner: Address
  /**
   * Resolves with the final counters after `signal` aborted and the loop drained: by then the
   * node has answered every call the load made (none is still running there).
   */
  readonly done: Promise<LoadStats>
  stats(): LoadStats
}

interface Sender {
  account: PrivateKeyAccount
  nonce: number
}

const GWEI = 1_000_000_000n

/**
 * Starts a seeded transaction load. Resolves once the burner is deployed and nonces are
 * known; the load then runs until `signal` aborts. A failed send is counted, logged and
 * followed by a nonce refresh for that sender; the load never throws after it started.
 */
export async function startLoad(opts: LoadOptions): Promise<LoadGenerator> {
  if ((opts.txPerBlock === undefined) === (opts.txPerSecond === undefined)) {
    throw new RangeError('startLoad: give exactly one of txPerBlock and txPerSecond')
  }
  if (opts.privateKeys.length === 0) throw new RangeError('startLoad: privateKeys is empty')
  const rate = opts.txPerBlock ?? opts.txPerSecond ?? 1
  if (!(rate > 0)) throw new RangeError('startLoad: the rate must be > 0')
  const maxSlots = Math.min(255, Math.max(1, Math.floor(opts.maxSlotsPerCall ?? 64)))
  const mix = opts.mix ?? { transfer: 4, call: 4, withdrawal: 2 }
  const mixTotal = mix.transfer + mix.call + mix.withdrawal
  if (!(mixTotal > 0)) throw new RangeError('startLoad: mix weights must sum to > 0')
  const { signal } = opts
  const rpc = chainRpc(createPublicClient({ transport: http(opts.rpcUrl, { retryCount: 0, timeout: 10_000 }) }))
  // Calls are bounded by their timeout but not cut short by `signal`: an aborted call would go on
  // at the node after `done` resolved, and a caller that reorganises the chain next (anvil_reorg)
  // would race the load's last evm_mine — anvil 1.7.1 then loses the reorg's blocks
  // (docs/reliability.md). Stopping waits for the call in flight, milliseconds on a live node.
  const call = (method: string, params: readonly unknown[] = []): Promise<unknown> => rpcRequest(rpc, method, params, { timeoutMs: 10_000 })
  const rand = mulberry32(opts.seed)
  const stats: LoadStats = { sent: 0, failed: 0, byKind: { transfer: 0, call: 0, withdrawal: 0 }, blocksMined: 0, lastError: null }

  const chainId = hexToSafeNumber((await call('eth_chainId')) as Hex, 'chain id')
  const senders: Sender[] = []
  for (const key of opts.privateKeys) {
    const account = privateKeyToAccount(key)
    senders.push({ account, nonce: hexToSafeNumber((await call('eth_getTransactionCount', [account.address, 'pending'])) as Hex, 'nonce') })
  }

  let fees = await currentFees()
  async function currentFees(): Promise<{ maxFeePerGas: bigint; maxPriorityFeePerGas: bigint }> {
    const block = (await call('eth_getBlockByNumber', ['latest', false])) as { baseFeePerGas?: Hex } | null
    const base = block?.baseFeePerGas !== undefined ? BigInt(block.baseFeePerGas) : GWEI
    return { maxFeePerGas: base * 2n + GWEI, maxPriorityFeePerGas: GWEI }
  }

  async function send(sender: Sender, tx: { to?: Address; value?: bigint; data?: Hex; gas: bigint }): Promise<Hex> {
    const signed = await sender.account.signTransaction({
      chainId,
      type: 'eip1559',
      nonce: sender.nonce,
      gas: tx.gas,
      value: tx.value ?? 0n,
      ...(tx.to !== undefined ? { to: tx.to } : {}),
      ...(tx.data !== undefined ? { data: tx.data } : {}),
      ...fees,
    })
    const hash = (await call('eth_sendRawTransaction', [signed])) as Hex
    sender.nonce++
    return hash
  }

  // Deploy the burner (CREATE from the first sender) unless one was given.
  let burner = opts.burner
  if (burner === undefined) {
    const deployer = senders[0] as Sender
    const automine = (await call('anvil_getAutomine').catch(() => true)) as boolean
    const hash = await send(deployer, { data: BURNER_INITCODE, gas: 200_000n })
    if (!automine) await call('evm_mine')
    burner = await waitForContract(hash)
  }
  const burnerAddress: Address = burner

  async function waitForContract(hash: Hex): Promise<Address> {
    for (let i = 0; i < 600; i++) {
      const receipt = (await call('eth_getTransactionReceipt', [hash])) as { contractAddress?: Address | null; status?: Hex } | null
      if (receipt !== null) {
        if (receipt.status !== '0x1' || !receipt.contractAddress) throw new Error(`burner deployment ${hash} failed`)
        return receipt.contractAddress
      }
      await sleep(100)
    }
    throw new Error(`burner deployment ${hash} was not mined within 60 s`)
  }

  function sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (signal.aborted) return resolve()
      const onAbort = (): void => {
        clearTimeout(t)
        resolve()
      }
      const t = setTimeout(() => {
        signal.removeEventListener('abort', onAbort)
        resolve()
      }, ms)
      signal.addEventListener('abort', onAbort, { once: true })
    })
  }

  const randomAddress = (): Address => keccak256(toHex(`proofline-load:${opts.seed}:${rand()}`)).slice(0, 42) as Address

  function pickKind(): LoadTxKind {
    const x = rand() * mixTotal
    if (x < mix.transfer) return 'transfer'
    if (x < mix.transfer + mix.call) return 'call'
    return 'withdrawal'
  }

  /** Sends one transaction of a seeded random kind; counts failures instead of throwing. */
  async function sendOne(): Promise<void> {
    const sender = senders[Math.floor(rand() * senders.length)] as Sender
    const kind = pickKind()
    try {
      if (kind === 'transfer') {
        await send(sender, { to: randomAddress(), value: BigInt(1 + Math.floor(rand() * 1e12)), gas: 21_000n })
      } else if (kind === 'call') {
        // Squared uniform: mostly small calls, a few large ones.
        const slots = 1 + Math.floor(rand() * rand() * maxSlots)
        await send(sender, { to: burnerAddress, data: burnerCalldata(slots), gas: BigInt(60_000 + slots * 25_000) })
      } else {
        const dataLength = Math.floor(rand() * 64)
        const data = toHex(Uint8Array.from({ length: dataLength }, () => Math.floor(rand() * 256)))
        await send(sender, {
          to: MESSAGE_PASSER_ADDRESS,
          value: BigInt(Math.floor(rand() * 1e9)),
          data: encodeFunctionData({ abi: l2ToL1MessagePasserAbi, functionName: 'initiateWithdrawal', args: [randomAddress(), 100_000n, data] }),
          gas: 250_000n,
        })
      }
      stats.sent++
      stats.byKind[kind]++
    } catch (err) {
      if (signal.aborted) return
      stats.failed++
      stats.lastError = errorMessage(err)
      opts.log?.warn({ err: stats.lastError, kind }, 'load: send failed; refreshing the nonce')
      try {
        sender.nonce = hexToSafeNumber((await call('eth_getTransactionCount', [sender.account.address, 'pending'])) as Hex, 'nonce')
      } catch {
        // The node is unreachable; the next send will fail and retry the refresh.
      }
    }
  }

  async function run(): Promise<void> {
    if (opts.txPerBlock !== undefined) {
      const wasAutomine = (await call('anvil_getAutomine').catch(() => false)) as boolean
      if (wasAutomine) await call('evm_setAutomine', [false])
      try {
        while (!signal.aborted) {
          fees = await currentFees().catch(() => fees)
          for (let i = 0; i < opts.txPerBlock && !signal.aborted; i++) await sendOne()
          if (signal.aborted) break
          try {
            await call('evm_mine')
            stats.blocksMined++
          } catch (err) {
            if (!signal.aborted) stats.lastError = errorMessage(err)
          }
          await sleep(opts.blockIntervalMs ?? 1000)
        }
      } finally {
        // Restore automine even though the signal aborted (no signal on this call).
        if (wasAutomine) await rpcRequest(rpc, 'evm_setAutomine', [true], { timeoutMs: 5_000 }).catch(() => undefined)
      }
      return
    }
    const perSecond = opts.txPerSecond ?? 1
    const t0 = Date.now()
    let n = 0
    let feesAt = Date.now()
    while (!signal.aborted) {
      if (Date.now() - feesAt > 1000) {
        fees = await currentFees().catch(() => fees)
        feesAt = Date.now()
      }
      await sendOne()
      n++
      const wait = t0 + (n / perSecond) * 1000 - Date.now()
      if (wait > 0) await sleep(wait)
    }
  }

  const done = run().then(
    () => ({ ...stats }),
    (err: unknown) => {
      stats.lastError = errorMessage(err)
      opts.log?.warn({ err: stats.lastError }, 'load stopped on an error')
      return { ...stats }
    },
  )

  return { burner: burnerAddress, done, stats: () => ({ ...stats, byKind: { ...stats.byKind } }) }
}
