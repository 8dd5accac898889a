/**
 * UUIDv7 (RFC 9562) text ids: 48 bits of Unix milliseconds, then a 42-bit
 * counter (RFC 9562 §6.2 method 1) seeded randomly each millisecond and
 * incremented within it, then 32 random bits. Ids made by one process sort in
 * the order they were made, even within one millisecond or when the clock
 * steps back; ids of different processes sort by time.
 *
 * @internal
 */
import { randomFillSync } from "node:crypto"

const COUNTER_BITS = 2 ** 42
const SEED_BITS = 2 ** 41

let lastMs = -1
let counter = 0
/** Random bytes are drawn from the OS in blocks (one syscall per 409 ids, not one per id). */
const POOL_SIZE = 4096
const pool = new Uint8Array(POOL_SIZE)
let poolAt = POOL_SIZE
const random = (): Uint8Array => {
  if (poolAt + 10 > POOL_SIZE) {
    randomFillSync(pool)
    poolAt = 0
  }
  const bytes = pool.subarray(poolAt, poolAt + 10)
  poolAt += 10
  return bytes
}

/** Two hex digits per byte value (an id is written byte by byte, without a string per number). */
const BYTE_HEX: ReadonlyArray<string> = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"))
const byteHex = (value: number): string => BYTE_HEX[value & 0xff]!

/** A new UUIDv7 text id for the time `nowMs`. */
export const uuidv7 = (nowMs: number): string => {
  const r = random()
  if (nowMs > lastMs) {
    lastMs = nowMs
    counter = (r[0]! & 0x01) * 2 ** 40 + r[1]! * 2 ** 32 + ((r[2]! << 24) >>> 0) + (r[3]! << 16) + (r[4]! << 8) + r[5]!
    counter = counter % SEED_BITS
  } else {
    counter++
    if (counter >= COUNTER_BITS) {
      lastMs++
      counter = (r[1]! * 2 ** 32 + ((r[2]! << 24) >>> 0) + (r[3]! << 16) + (r[4]! << 8) + r[5]!) % SEED_BITS
    }
  }
  const ms = lastMs
  const msHigh = Math.floor(ms / 2 ** 24)
  const msLow = ms % 2 ** 24
  const high12 = Math.floor(counter / 2 ** 30)
  const low30 = counter % 2 ** 30
  const variant = 0x8000 | (low30 >>> 16)
  return byteHex(msHigh >>> 16) + byteHex(msHigh >>> 8) + byteHex(msHigh) + byteHex(msLow >>> 16) + "-" +
    byteHex(msLow >>> 8) + byteHex(msLow) + "-7" + BYTE_HEX[high12 >>> 8]![1] + byteHex(high12) + "-" +
    byteHex(variant >>> 8) + byteHex(variant) + "-" + byteHex(low30 >>> 8) + byteHex(low30) +
    byteHex(r[6]!) + byteHex(r[7]!) + byteHex(r[8]!) + byteHex(r[9]!)
}
