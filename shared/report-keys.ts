/**
 * Report field names are kebab-case, as QEMU's query-migrate names are. Values that come from
 * elsewhere with camelCase keys (the guest's self-check, the resume gap) are renamed on the way in.
 */
export function kebabCaseKeys<T>(v: T): T {
  if (Array.isArray(v)) return v.map(kebabCaseKeys) as T;
  if (v === null || typeof v !== 'object') return v;
  return Object.fromEntries(
    Object.entries(v as Record<string, unknown>).map(([k, x]) => [
      k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`),
      kebabCaseKeys(x),
    ]),
  ) as T;
}

/** A report field by its dotted path (`guest.self-check.ok`); undefined where the path ends. */
export function reportField(r: Record<string, unknown>, path: string): unknown {
  let v: unknown = r;
  for (const k of path.split('.')) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string, unknown>)[k];
  }
  return v;
}
