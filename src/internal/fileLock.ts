/**
 * Exclusive locks for the File store, between the fibers of one process and
 * between processes sharing the directory.
 *
 * A lock is a file `<dir>/<key>.lock` created with `O_CREAT | O_EXCL` (flag
 * `wx`), holding `{ token, pid, host, expiresAt }`. It is removed when the
 * holder is done. A lock is stale, and may be broken by anyone, when it has
 * expired (`expiresAt` passed: the holder crashed on another machine, or hung
 * for longer than the ttl), or when its holder is a process of this machine
 * (same host name and pid namespace) that no longer exists. A lock file that
 * is not (yet) valid JSON — a holder between `open` and `write`, or a crash
 * there — is stale once its mtime is a ttl old.
 *
 * Breaking is exclusive too: the breaker first creates `<key>.lock.<token>.break`
 * (`wx`), then checks that the lock still holds the token it judged stale, and
 * only then removes it. So two breakers of one stale lock never remove a lock
 * that a third process took in between. A break marker left by a crash is
 * removed once it is a ttl old.
 *
 * Within one process, a keyed semaphore queues the fibers that want the same
 * key, so they do not poll the file system against each other.
 *
 * Lock times are wall-clock times (`Date.now()`), shared with other
 * processes; the waits between attempts run on the live clock, so a test on
 * `TestClock` never hangs on a lock.
 *
 * @internal
 */
import type * as FileSystem from "@effect/platform/FileSystem"
import type { PlatformError } from "@effect/platform/Error"
import { Clock, Data, Duration, Effect, Option, type Scope } from "effect"
import { randomUUID } from "node:crypto"
import { hostname } from "node:os"

/** A lock was not obtained within the time allowed. */
export class LockTimeout extends Data.TaggedError("LockTimeout")<{ readonly key: string; readonly waitedMs: number }> {
  override get message(): string {
    return `timed out after ${this.waitedMs} ms waiting for the lock of ${JSON.stringify(this.key)}`
  }
}

/** What a lock file holds. */
interface LockContent {
  readonly token: string
  readonly pid: number
  readonly host: string
  readonly expiresAt: number
}

export interface LockerOptions {
  readonly fs: FileSystem.FileSystem
  /** The directory of the lock files (created if missing). */
  readonly dir: string
  readonly join: (dir: string, name: string) => string
  /** How long a lock lives before another process may break it. */
  readonly ttlMs: number
  /** This process's host identity (see {@link hostIdentity}); `undefined` turns off the liveness check of pids. */
  readonly host: string | undefined
}

export interface Locker {
  /**
   * Takes the locks of `keys` (in sorted order, so two holders of overlapping
   * sets never deadlock) until the scope closes. Waits at most `waitMs` for
   * each; then fails with `LockTimeout`. The wait is interruptible.
   */
  readonly lock: (
    keys: ReadonlyArray<string>,
    waitMs: number
  ) => Effect.Effect<void, PlatformError | LockTimeout, Scope.Scope>
  /** Removes break markers older than a ttl (left by crashes). Best effort. */
  readonly collectGarbage: Effect.Effect<void>
}

/** A lock whose holder has this long left is released through the breaking protocol (see `release`). */
const RELEASE_MARGIN_MS = 5_000
/** The longest wait between two attempts. */
const MAX_BACKOFF_MS = 25

const liveClock = Clock.make()
const encoder = new TextEncoder()
/** Sleeps on the wall clock, whatever clock the fiber runs with. */
const sleep = (ms: number) => Effect.withClock(Effect.sleep(Duration.millis(ms)), liveClock)

const isReason = (reason: string) => (e: PlatformError | LockTimeout): boolean =>
  e._tag === "SystemError" && e.reason === reason
const isNotFound = isReason("NotFound")
const isAlreadyExists = isReason("AlreadyExists")

/**
 * This machine and pid namespace, as locks record it: a pid names a process
 * only within one pid namespace, so two containers with one host name must
 * not judge each other's pids. `undefined` when the namespace cannot be read
 * (not Linux): then only expiry breaks a lock.
 */
export const hostIdentity = (fs: FileSystem.FileSystem): Effect.Effect<string | undefined> =>
  fs.readLink("/proc/self/ns/pid").pipe(
    Effect.map((ns) => `${hostname()}|${ns}`),
    Effect.orElseSucceed(() => undefined)
  )

/** Whether a process with this pid exists (on this machine). */
const isAlive = (pid: number): boolean => {
  if (pid === process.pid) return true
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    // EPERM: it exists, but belongs to someone else.
    return typeof e === "object" && e !== null && (e as { code?: unknown }).code === "EPERM"
  }
}

const parseLock = (text: string): LockContent | undefined => {
  try {
    const value = JSON.parse(text) as Partial<LockContent> | null
    return typeof value === "object" && value !== null && typeof value.token === "string" &&
        /^[0-9a-f-]{36}$/.test(value.token) && typeof value.pid === "number" && typeof value.host === "string" &&
        typeof value.expiresAt === "number"
      ? value as LockContent
      : undefined
  } catch {
    return undefined
  }
}

export const makeLocker = (options: LockerOptions): Locker => {
  const { dir, fs, host, join, ttlMs } = options
  const local = new Map<string, { readonly semaphore: Effect.Semaphore; users: number }>()

  /** Waits for the in-process permit of `key` until the scope closes. */
  const lockLocal = (key: string): Effect.Effect<void, never, Scope.Scope> =>
    Effect.flatMap(
      Effect.acquireRelease(
        Effect.sync(() => {
          let entry = local.get(key)
          if (entry === undefined) {
            entry = { semaphore: Effect.unsafeMakeSemaphore(1), users: 0 }
            local.set(key, entry)
          }
          entry.users++
          return entry
        }),
        (entry) =>
          Effect.sync(() => {
            if (--entry.users === 0) local.delete(key)
          })
      ),
      (entry) =>
        Effect.uninterruptibleMask((restore) =>
          Effect.zipRight(restore(entry.semaphore.take(1)), Effect.addFinalizer(() => entry.semaphore.release(1)))
        )
    )

  const lockPath = (key: string) => join(dir, `${key}.lock`)

  /** What is stale about the lock at `path`, if anything: the token (or mtime stamp) that names it. */
  const inspect = (path: string): Effect.Effect<
    { readonly gone: true } | { readonly stale: false } | { readonly stale: true; readonly stamp: string },
    PlatformError
  > =>
    fs.readFileString(path).pipe(
      Effect.flatMap((text) => {
        const content = parseLock(text)
        if (content !== undefined) {
          const dead = content.expiresAt <= Date.now() ||
            (host !== undefined && content.host === host && !isAlive(content.pid))
          return Effect.succeed(dead ? { stale: true as const, stamp: content.token } : { stale: false as const })
        }
        return Effect.map(fs.stat(path), (info) => {
          const mtime = Option.getOrElse(Option.map(info.mtime, (d) => d.getTime()), () => 0)
          return mtime + ttlMs <= Date.now() ? { stale: true as const, stamp: `m${mtime}` } : { stale: false as const }
        })
      }),
      Effect.catchIf(isNotFound, () => Effect.succeed({ gone: true as const }))
    )

  /** Whether the lock at `path` is still the one named by `stamp`. */
  const stillIs = (path: string, stamp: string): Effect.Effect<boolean, PlatformError> =>
    fs.readFileString(path).pipe(
      Effect.flatMap((text) => {
        const content = parseLock(text)
        if (content !== undefined) return Effect.succeed(content.token === stamp)
        return Effect.map(fs.stat(path), (info) =>
          `m${Option.getOrElse(Option.map(info.mtime, (d) => d.getTime()), () => 0)}` === stamp)
      }),
      Effect.catchIf(isNotFound, () => Effect.succeed(false))
    )

  /**
   * Removes the lock at `path` if it still is the one named by `stamp`,
   * exclusively (see the module header). `false` when another process is
   * breaking it (the caller waits a little).
   */
  const breakLock = (path: string, stamp: string): Effect.Effect<boolean, PlatformError> => {
    const marker = `${path}.${stamp}.break`
    return fs.writeFileString(marker, JSON.stringify({ pid: process.pid, host, at: Date.now() }), { flag: "wx" }).pipe(
      Effect.matchEffect({
        onFailure: (e) =>
          isAlreadyExists(e)
            // Another breaker is at it — unless its marker is a left-over of a crash.
            ? fs.stat(marker).pipe(
              Effect.flatMap((info) =>
                Option.getOrElse(Option.map(info.mtime, (d) => d.getTime()), () => 0) + ttlMs <= Date.now()
                  ? Effect.as(fs.remove(marker, { force: true }), true)
                  : Effect.succeed(false)
              ),
              Effect.catchIf(isNotFound, () => Effect.succeed(true))
            )
            : Effect.fail(e),
        onSuccess: () =>
          Effect.flatMap(stillIs(path, stamp), (same) => same ? fs.remove(path, { force: true }) : Effect.void).pipe(
            Effect.ensuring(Effect.ignore(fs.remove(marker, { force: true }))),
            Effect.as(true)
          )
      })
    )
  }

  /**
   * Takes the file lock of `key`, waiting at most `waitMs`; returns how to
   * release it. Runs uninterruptibly but for its waits (`restore`), so a lock
   * it created is always handed back.
   */
  const acquireFile = (
    key: string,
    waitMs: number,
    restore: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  ): Effect.Effect<Effect.Effect<void>, PlatformError | LockTimeout> =>
    Effect.suspend(() => {
      const path = lockPath(key)
      const started = Date.now()
      let backoff = 1
      const pause: Effect.Effect<void, LockTimeout> = Effect.suspend(() => {
        const waited = Date.now() - started
        if (waited >= waitMs) return Effect.fail(new LockTimeout({ key, waitedMs: waited }))
        const ms = Math.min(backoff, waitMs - waited) * (0.5 + Math.random() / 2)
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS)
        return restore(sleep(ms))
      })
      const attempt: Effect.Effect<Effect.Effect<void>, PlatformError | LockTimeout> = Effect.suspend(() => {
        const content: LockContent = {
          token: randomUUID(),
          pid: process.pid,
          host: host ?? hostname(),
          expiresAt: Date.now() + ttlMs
        }
        const create = Effect.scoped(Effect.flatMap(fs.open(path, { flag: "wx" }), (file) =>
          // A write that fails after the exclusive create (a full disk) leaves an empty lock: ours to remove.
          file.writeAll(encoder.encode(JSON.stringify(content))).pipe(
            Effect.tapError(() => Effect.ignore(fs.remove(path, { force: true })))
          )))
        return create.pipe(
          Effect.as(release(path, content)),
          Effect.catchIf(isNotFound, () => Effect.zipRight(fs.makeDirectory(dir, { recursive: true }), attempt)),
          Effect.catchIf(isAlreadyExists, () =>
            Effect.flatMap(inspect(path), (found) =>
              "gone" in found
                ? attempt
                : found.stale
                ? Effect.flatMap(breakLock(path, found.stamp), (progress) =>
                  progress ? attempt : Effect.zipRight(pause, attempt))
                : Effect.zipRight(pause, attempt)))
        )
      })
      return attempt
    })

  /**
   * Releases a lock: a plain removal while it has time left (nobody may break
   * it before it expires), else through the breaking protocol, which never
   * removes a lock another holder took after ours expired. Best effort: a lock
   * that cannot be removed expires.
   */
  const release = (path: string, content: LockContent): Effect.Effect<void> =>
    Effect.ignore(Effect.suspend(() =>
      Date.now() < content.expiresAt - Math.min(RELEASE_MARGIN_MS, ttlMs / 2)
        ? fs.remove(path, { force: true })
        : breakLock(path, content.token)
    ))

  const lockFile = (key: string, waitMs: number): Effect.Effect<void, PlatformError | LockTimeout, Scope.Scope> =>
    Effect.uninterruptibleMask((restore) =>
      Effect.flatMap(acquireFile(key, waitMs, restore), (releaseIt) => Effect.addFinalizer(() => releaseIt))
    )

  return {
    lock: (keys, waitMs) =>
      Effect.forEach([...new Set(keys)].sort(), (key) => Effect.zipRight(lockLocal(key), lockFile(key, waitMs)), {
        discard: true
      }),
    collectGarbage: fs.readDirectory(dir).pipe(
      Effect.flatMap((names) =>
        Effect.forEach(names.filter((n) => n.endsWith(".break")), (name) => {
          const marker = join(dir, name)
          return Effect.flatMap(fs.stat(marker), (info) =>
            Option.getOrElse(Option.map(info.mtime, (d) => d.getTime()), () => 0) + ttlMs <= Date.now()
              ? fs.remove(marker, { force: true })
              : Effect.void)
        }, { discard: true })
      ),
      Effect.ignore
    )
  }
}
