import { describe, expect, it } from 'vitest'
import { errorMessage, redactUrls } from './errors.js'

describe('redactUrls', () => {
  it('behavior: masks API keys in paths, userinfo passwords and tokens, and query values; keeps the endpoint', () => {
    expect(redactUrls('URL: https://mainnet.infura.io/v3/0123456789abcdef0123456789abcdef\nRequest body: {}')).toBe('URL: https://mainnet.infura.io/v3/***\nRequest body: {}')
    expect(redactUrls('cannot connect to postgres://proofline:hunter2@db:5432/proofline')).toBe('cannot connect to postgres://proofline:***@db:5432/proofline')
    expect(redactUrls('GET https://rpc.example/eth?apikey=s3cr3t&chain=1 failed')).toBe('GET https://rpc.example/eth?apikey=***&chain=*** failed')
    expect(redactUrls('wss://tok3n@node.example:8546/')).toBe('wss://***@node.example:8546/')
    expect(redactUrls('at http://l2-node:8545 and nats://nats:4222, see http://s3:9000/bucket/blobs')).toBe('at http://l2-node:8545 and nats://nats:4222, see http://s3:9000/bucket/blobs')
  })

  it('behavior: errorMessage applies it to any thrown value', () => {
    expect(errorMessage(new Error('HTTP request failed.\n\nURL: https://eth.g.alchemy.com/v2/AbCdEfGhIjKlMnOpQrStUvWx'))).not.toContain('AbCdEfGh')
    expect(errorMessage('http://u:pw@h/x')).toBe('http://u:***@h/x')
    expect(errorMessage(undefined)).toBe('undefined')
  })
})
