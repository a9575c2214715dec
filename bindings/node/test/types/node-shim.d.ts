// The one Node type index.d.ts names (no @types/node in this package).
interface Buffer extends Uint8Array {}
