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
