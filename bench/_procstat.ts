/**
 * Small readers of Linux `/proc` for the benchmark harness: a process's CPU
 * time and peak memory, the machine's load and CPU model.
 *
 * @module
 */

let clockTicks: number | undefined;

/** `getconf CLK_TCK` (clock ticks per second; 100 on practically every Linux). */
export async function clockTicksPerSecond(): Promise<number> {
  if (clockTicks !== undefined) return clockTicks;
  clockTicks = 100;
  try {
    const out = await new Deno.Command("getconf", { args: ["CLK_TCK"], stderr: "null" }).output();
    const n = Number(new TextDecoder().decode(out.stdout).trim());
    if (out.success && n > 0) clockTicks = n;
  } catch {
    // no getconf: keep 100
  }
  return clockTicks;
}

/** utime + stime of `pid` (all its threads) in seconds, or `undefined` once it is gone. */
export async function cpuSeconds(pid: number): Promise<number | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(`/proc/${pid}/stat`);
  } catch {
    return undefined;
  }
  // the command name (field 2) may hold spaces and parentheses: split after the last ")"
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const utime = Number(fields[14 - 3]);
  const stime = Number(fields[15 - 3]);
  return (utime + stime) / await clockTicksPerSecond();
}

/** Peak resident set size (`VmHWM`) of `pid` in bytes, or `undefined`. */
export async function peakRssBytes(pid: number): Promise<number | undefined> {
  try {
    const status = await Deno.readTextFile(`/proc/${pid}/status`);
    const m = status.match(/^VmHWM:\s+(\d+)\s+kB/m);
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Resident set size now (`VmRSS`) of `pid` in bytes, or `undefined`. */
export async function rssBytes(pid: number): Promise<number | undefined> {
  try {
    const status = await Deno.readTextFile(`/proc/${pid}/status`);
    const m = status.match(/^VmRSS:\s+(\d+)\s+kB/m);
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** The 1-minute load average, or `undefined`. */
export async function loadAverage(): Promise<number | undefined> {
  try {
    return Number((await Deno.readTextFile("/proc/loadavg")).split(" ")[0]);
  } catch {
    return undefined;
  }
}

/** The CPUs this process may run on, as the kernel prints them (e.g. `0-1`). */
export async function allowedCpus(): Promise<string | undefined> {
  try {
    const status = await Deno.readTextFile("/proc/self/status");
    return status.match(/^Cpus_allowed_list:\s*(\S+)/m)?.[1];
  } catch {
    return undefined;
  }
}

/** Expands a CPU list like `0-1,4` to `[0, 1, 4]`. */
export function parseCpuList(list: string): number[] {
  const cpus: number[] = [];
  for (const part of list.split(",")) {
    const [a, b] = part.split("-").map(Number);
    for (let c = a; c <= (b ?? a); c++) cpus.push(c);
  }
  return cpus;
}

/** The CPU model name from `/proc/cpuinfo`, or `undefined`. */
export async function cpuModel(): Promise<string | undefined> {
  try {
    const info = await Deno.readTextFile("/proc/cpuinfo");
    return info.match(/^model name\s*:\s*(.+)$/m)?.[1]?.trim();
  } catch {
    return undefined;
  }
}
