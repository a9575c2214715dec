// Type-checked (not run) by scripts/test-node: the ES module entry's
// declarations (index.d.mts, package.json `exports` → `import` → `types`) give
// every name as a named import, the JS-layer classes too, and the module as
// the default import.
import wrale, {
  Board,
  ErrorCategory,
  EventSubscription,
  Fleet,
  InvalidInput,
  NotFound,
  PolicyViolation,
  SafetyEngine,
  WraleError,
  version,
} from 'wrale'

export async function usesTheEsmApi(fleet: Fleet): Promise<void> {
  const v: string = version()
  void v
  const sub: EventSubscription = await fleet.onEvent({ kinds: ['audit'] }, (event) => void event)
  await sub.stop()
  const engine = new SafetyEngine('pi4b')
  try {
    engine.evaluate(Board.sim('pi4b').sample())
    await fleet.device('pi-1')
  } catch (e) {
    if (e instanceof NotFound || e instanceof PolicyViolation || e instanceof InvalidInput) {
      const category: ErrorCategory = e.category
      const base: WraleError = e
      void [category, base.code]
    }
  }
  // The default import is the whole module.
  const sameClass: typeof WraleError = wrale.WraleError
  void sameClass
  // @ts-expect-error there is no such export
  void wrale.NoSuchExport
}
