// Type-checked (not run) by scripts/test-node: the hand-written declarations of
// src/header.d.ts merge with the generated ones in index.d.ts and describe what
// src/extend.js adds (error classes, async iteration, onEvent).
import {
  Board,
  ErrorCategory,
  EventSubscription,
  Fleet,
  NotFound,
  PolicyViolation,
  SafetyEngine,
  WraleError,
} from '../..'

export async function usesTheApi(fleet: Fleet): Promise<void> {
  const stream = await fleet.events({ kinds: ['twin'] })
  for await (const event of stream) {
    void event
    break
  }
  for await (const event of fleet.events({ device: 'pi-1' })) {
    void event
    break
  }
  const sub: EventSubscription = await fleet.onEvent(
    { kinds: ['audit'] },
    (event) => void event,
    (error: WraleError) => void error.code,
  )
  const active: boolean = sub.active
  void active
  await sub.stop()
  await sub.done

  const board = Board.fromCallbacks('pi4b', { cpu: () => 50 }, { fan0: (duty: number) => void duty }, { timeoutMs: 500 })
  const sample = board.sample()
  void sample.cpuTempC
  // @ts-expect-error a sensor function returns °C as a number
  Board.fromCallbacks('pi4b', { cpu: () => 'hot' })

  const engine = SafetyEngine.fromFile('pi4b', '/etc/wrale/policy.toml')
  engine.loadFile('/etc/wrale/policy.toml')
  try {
    engine.require({ type: 'reboot' })
  } catch (e) {
    if (e instanceof PolicyViolation) {
      const category: ErrorCategory = e.category
      const code: string = e.code
      const status: unknown = e.details?.status
      void [category, code, status]
    }
    const base: WraleError = new NotFound('gone', 'not_found', 'not_found')
    const err: Error = base
    void err
  }
}
