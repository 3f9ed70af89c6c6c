// Writing received bytes to stdout exactly as they came, plus a final
// newline on a terminal so the shell prompt does not glue on.

/** A writable to stdout that remembers whether the last byte was a newline. */
export function stdoutSink(): { writable: WritableStream<Uint8Array>; finish(): Promise<void> } {
  let last = 0x0a;
  const writable = new WritableStream<Uint8Array>({
    async write(chunk) {
      if (chunk.length === 0) return;
      last = chunk[chunk.length - 1];
      let off = 0;
      while (off < chunk.length) off += await Deno.stdout.write(chunk.subarray(off));
    },
  });
  return {
    writable,
    async finish() {
      if (last !== 0x0a && Deno.stdout.isTerminal()) {
        await Deno.stdout.write(new Uint8Array([0x0a]));
      }
    },
  };
}
