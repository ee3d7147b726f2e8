// The subset of ffjavascript (no bundled types) the development CRS generator uses: the BN254
// wasm module it builds, and the offsets of the generators inside that module's memory.
declare module 'ffjavascript' {
  /** A BN254 engine; with `singleThread`, `tm.code` holds the wasm module's bytes. */
  export interface Bn128Engine {
    tm: { code: Uint8Array; pG1gen: number; pG2gen: number }
    G1: Group
    G2: Group
    /** e(a1, b1) · e(a2, b2) == 1 */
    pairingEq(a1: Point, b1: Point, a2: Point, b2: Point): Promise<boolean>
    terminate(): Promise<void>
  }
  /** An opaque point in the engine's internal representation. */
  export type Point = Uint8Array
  export interface Group {
    g: Point
    neg(p: Point): Point
    /** From the uncompressed big-endian encoding (G2: x.c1, x.c0, y.c1, y.c0). */
    fromRprUncompressed(buff: Uint8Array, offset: number): Point
  }
  export function buildBn128(singleThread?: boolean): Promise<Bn128Engine>
}
