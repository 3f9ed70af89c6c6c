// Running a Deno TLS handshake with a deadline and an abort signal. Internal.

/**
 * Waits for `socket`'s handshake for at most `timeoutMs` (0 = no limit).
 * On timeout or abort the socket is closed (which also stops the handshake)
 * and the promise rejects with `onTimeout()` or the signal's reason; a
 * failed handshake closes the socket and rejects with `translate(err)`.
 */
export async function handshakeWithin(
  socket: Deno.TlsConn,
  timeoutMs: number,
  onTimeout: () => unknown,
  translate: (err: unknown) => unknown,
  signal?: AbortSignal,
): Promise<Deno.TlsHandshakeInfo> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let stopped: { reason: unknown } | undefined;
  let stop!: () => void;
  const stopping = new Promise<never>((_, reject) => (stop = () => reject(stopped!.reason)));
  stopping.catch(() => {});
  const onAbort = () => {
    stopped ??= { reason: signal!.reason };
    stop();
  };
  if (timeoutMs > 0) {
    timer = setTimeout(() => {
      stopped ??= { reason: onTimeout() };
      stop();
    }, timeoutMs);
  }
  signal?.addEventListener("abort", onAbort, { once: true });
  const handshake = socket.handshake();
  handshake.catch(() => {});
  try {
    if (signal?.aborted) onAbort();
    return await Promise.race([handshake, stopping]);
  } catch (err) {
    try {
      socket.close();
    } catch {
      // Already closed.
    }
    // Closing stops the handshake: let it settle, so no op outlives us.
    await handshake.catch(() => {});
    throw stopped ? stopped.reason : translate(err);
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
  }
}
