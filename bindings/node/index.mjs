// The ES module entry of `wrale` (package.json `exports`, condition `import`).
// Written by hand, not by napi-rs: it loads the CommonJS entry (index.js, the
// generated loader, which runs src/extend.js on the addon's exports) and names
// every export, because Node finds the named exports of a CommonJS module only
// by reading its text, and index.js names only the Rust-declared items, not
// the error classes and `EventSubscription` that src/extend.js adds.
// test/esm.test.mjs fails when a name index.d.ts declares is missing here.
import wrale from './index.js'

export const {
  // Declared in Rust (the generated part of index.d.ts).
  Board,
  Device,
  EventStream,
  Fleet,
  SafetyEngine,
  Sample,
  SyncSession,
  Twin,
  version,
  __napiBindingTarget,
  // Added by src/extend.js (src/header.d.ts).
  WraleError,
  PolicyViolation,
  HardwareError,
  SyncError,
  AuthError,
  NotFound,
  InvalidInput,
  ConflictError,
  Unavailable,
  InternalError,
  EventSubscription,
} = wrale

export default wrale
