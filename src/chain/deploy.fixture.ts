import {
  createPublicClient,
  createWalletClient,
  defineChain,
  http,
  type Abi,
  type Chain,
  type Hex,
  type PublicClient,
} from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { expect } from 'vitest'
import { decodeRevert, type DeployWalletClient } from './deploy.js'

/** anvil's well-known dev keys (mnemonic "test test … junk"); never hold value anywhere. */
export const ANVIL_KEYS: readonly Hex[] = [
  '0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80',
  '0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d',
  '0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a',
]

export interface DevClients {
  chain: Chain
  publicClient: PublicClient
  wallet(index: number): DeployWalletClient
}

/** viem clients for a dev chain at `rpcUrl`, signing locally with anvil's keys. */
export function devClients(rpcUrl: string, chainId: number): DevClients {
  const chain = defineChain({
    id: chainId,
    name: `dev-${chainId}`,
    nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 },
    rpcUrls: { default: { http: [rpcUrl] } },
  })
  const transport = http(rpcUrl)
  const publicClient = createPublicClient({ chain, transport, pollingInterval: 50 })
  const wallet = (index: number): DeployWalletClient => {
    const key = ANVIL_KEYS[index]
    if (!key) throw new Error(`no anvil key ${index}`)
    return createWalletClient({ chain, transport, account: privateKeyToAccount(key) })
  }
  return { chain, publicClient, wallet }
}

/** Asserts that `promise` rejects with the custom error `errorName` of `abi`; returns its arguments. */
export async function expectRevert(promise: Promise<unknown>, abi: Abi, errorName: string): Promise<readonly unknown[]> {
  let caught: unknown
  try {
    await promise
  } catch (err) {
    caught = err
  }
  expect(caught, `expected a revert with ${errorName}`).toBeDefined()
  const cause = (caught as { cause?: unknown }).cause
  const decoded = decodeRevert(caught, abi) ?? decodeRevert(cause, abi)
  expect(decoded?.errorName, String(caught)).toBe(errorName)
  return decoded?.args ?? []
}
