// The subset of ffjavascript (no bundled types) the development CRS generator uses: the BN254
// wasm module it builds, and the offsets of the generators inside that module's memory.
declare module 'ffjavascript' {
  /** A BN254 engine; with `singleThread`, `tm.code` holds the wasm module's bytes. */
  export interface Bn128Engine {
    tm: { code: Uint8Array; pG1gen: number; pG2gen: number }
    terminate(): Promise<void>
  }
  export function buildBn128(singleThread?: boolean): Promise<Bn128Engine>
}
