// The parts of the `wrale` API that napi-rs cannot declare from Rust: the error
// classes, `Symbol.asyncIterator` on `EventStream` and `Fleet#onEvent`. The
// addon evaluates this file once when it loads (`init` in src/lib.rs) with the
// module's exports; the declarations are in src/header.d.ts, which the build
// puts at the top of the generated index.d.ts.
//
// It returns `makeError`, which the one error mapper (src/errors.rs) calls on
// the JS thread to build every thrown or rejected error.
;(function (exports) {
  'use strict'

  /** Base class of every Wrale error: `code`, `category`, `details`, `message`. */
  class WraleError extends Error {
    constructor(message, code, category, details) {
      super(message)
      this.code = code
      this.category = category
      if (details !== undefined && details !== null) this.details = details
    }
  }
  const classes = { WraleError }
  // One subclass per wrale_core::ErrorCategory, named by its class_name().
  for (const name of [
    'PolicyViolation',
    'HardwareError',
    'SyncError',
    'AuthError',
    'NotFound',
    'InvalidInput',
    'ConflictError',
    'Unavailable',
    'InternalError',
  ]) {
    classes[name] = { [name]: class extends WraleError {} }[name]
  }
  for (const [name, cls] of Object.entries(classes)) {
    Object.defineProperty(cls.prototype, 'name', { value: name, writable: true, configurable: true })
    Object.defineProperty(exports, name, { value: cls, enumerable: true, writable: true, configurable: true })
  }

  function makeError(className, code, message, category, details) {
    const cls = Object.prototype.hasOwnProperty.call(classes, className) ? classes[className] : WraleError
    const error = new cls(message, code, category, details)
    if (Error.captureStackTrace) Error.captureStackTrace(error, makeError)
    return error
  }

  const { EventStream, Fleet } = exports

  // `for await (const ev of stream)`: ends when the stream ends or is closed;
  // leaving the loop early (`break`, `return`, a throw) closes the stream.
  EventStream.prototype[Symbol.asyncIterator] = function () {
    const stream = this
    return {
      async next() {
        let value
        try {
          value = await stream.next()
        } catch (e) {
          await stream.close()
          throw e
        }
        return value === null ? { value: undefined, done: true } : { value, done: false }
      },
      async return(value) {
        await stream.close()
        return { value, done: true }
      },
      [Symbol.asyncIterator]() {
        return this
      },
    }
  }

  // `for await (const event of fleet.events(query))` without awaiting the
  // stream first: the Promise of the stream iterates the stream it settles with.
  const openEvents = Fleet.prototype.events
  Fleet.prototype.events = function events(query) {
    const pending = openEvents.call(this, query)
    pending[Symbol.asyncIterator] = () => {
      let iterator
      const open = async () => (iterator ??= (await pending)[Symbol.asyncIterator]())
      return {
        async next() {
          return (await open()).next()
        },
        async return(value) {
          return (await open()).return(value)
        },
        [Symbol.asyncIterator]() {
          return this
        },
      }
    }
    return pending
  }

  /** A callback subscription to the event stream (`Fleet#onEvent`). */
  class EventSubscription {
    #stream
    #stopped = false
    constructor(stream, callback, onError) {
      this.#stream = stream
      this.done = this.#pump(callback, onError)
    }
    async #pump(callback, onError) {
      try {
        for (;;) {
          const event = await this.#stream.next()
          if (event === null || this.#stopped) return
          callback(event)
        }
      } catch (e) {
        await this.#stream.close()
        if (this.#stopped) return
        if (onError) onError(e)
        else throw e
      } finally {
        this.#stopped = true
      }
    }
    /** Whether callbacks may still come. */
    get active() {
      return !this.#stopped
    }
    /** Stops the subscription: no callback runs after this, and the WebSocket is closed. */
    async stop() {
      this.#stopped = true
      await this.#stream.close()
      await this.done.catch(() => {})
    }
  }
  Object.defineProperty(exports, 'EventSubscription', {
    value: EventSubscription,
    enumerable: true,
    writable: true,
    configurable: true,
  })

  Fleet.prototype.onEvent = async function (query, callback, onError) {
    if (typeof callback !== 'function') {
      throw makeError('InvalidInput', 'invalid_argument', 'onEvent needs a callback function', 'invalid_input')
    }
    if (onError !== undefined && typeof onError !== 'function') {
      throw makeError('InvalidInput', 'invalid_argument', 'onEvent: onError must be a function', 'invalid_input')
    }
    return new EventSubscription(await this.events(query ?? undefined), callback, onError)
  }

  return makeError
})
