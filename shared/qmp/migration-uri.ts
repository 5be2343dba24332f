/** QEMU's migration URIs, the one transport we have: tcp:HOST:PORT (or tcp:[IPv6]:PORT). */
export function parseTcpUri(uri: string): { host: string; port: number } | null {
  const m = /^tcp:(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(uri);
  if (!m || Number(m[2]) > 65535) return null;
  return { host: m[1]!.replace(/^\[(.*)\]$/, '$1'), port: Number(m[2]) };
}
