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

  // What napi-rs exported (the Rust-declared classes and functions), before
  // this file adds its own.
  const natives = Object.keys(exports)

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

  // napi-rs converts the arguments before any Wrale code runs and refuses one
  // of the wrong JS type with a plain Error whose `code` is napi's status
  // ('StringExpected', 'InvalidArg', ...). Every native function, constructor,
  // method and setter is wrapped here, once, so that refusal becomes an
  // `InvalidInput` with code 'invalid_argument' naming the call, like a bad
  // argument value the Rust side refuses; napi's error is its `cause`. A
  // method that returns a Promise never throws: it rejects instead.
  const napiArgumentStatuses = new Set([
    'InvalidArg',
    'ObjectExpected',
    'StringExpected',
    'NameExpected',
    'FunctionExpected',
    'NumberExpected',
    'BooleanExpected',
    'ArrayExpected',
    'BigintExpected',
    'DateExpected',
    'ArrayBufferExpected',
    'DetachableArraybufferExpected',
  ])
  // The Promise-returning natives (test/arguments.test.js checks this against
  // index.d.ts): every Fleet method, and these.
  const promiseMethods = new Set(['Device.enroll', 'Device#stop', 'EventStream#next', 'EventStream#close'])
  const returnsPromise = (where) => where.startsWith('Fleet#') || promiseMethods.has(where)
  const expectedByStatus = {
    ObjectExpected: 'an object',
    StringExpected: 'a string',
    NameExpected: 'a string or a symbol',
    FunctionExpected: 'a function',
    NumberExpected: 'a number',
    BooleanExpected: 'a boolean',
    ArrayExpected: 'an array',
    BigintExpected: 'a BigInt',
    DateExpected: 'a Date',
    ArrayBufferExpected: 'an ArrayBuffer',
    DetachableArraybufferExpected: 'a detachable ArrayBuffer',
  }

  /** napi's conversion message as "expected ..., got ..." (napi's own text when it has another shape). */
  function describeNapiRefusal(status, message) {
    let m = /^Failed to convert JavaScript value `(\w+)(?: (.*?))? ?` into rust type `[^`]*`(?: on (\S+))?$/.exec(message)
    if (m) return got(m[3], expectedByStatus[status], m[1], m[2])
    m = /^Failed to convert napi value (?:(\w+) )?into rust type `[^`]*`(?: on (\S+))?$/.exec(message)
    if (m) return got(m[2], expectedByStatus[status], m[1])
    if ((m = /^Failed to recover `(\w+)` type from napi value/.exec(message))) return `expected a ${m[1]}`
    if ((m = /^Missing field `(\w+)`$/.exec(message))) return `missing field ${m[1]}`
    if (message === 'Given napi value is not an array') return 'expected an array'
    if (message === 'Failed to create reference from Buffer') return 'expected a Buffer'
    if ((m = /^(?:JS )?(.+) cannot be represented as a serde_json::Value$/.exec(message))) {
      return `${m[1].toLowerCase()} cannot be passed where a JSON value is expected`
    }
    return message
  }
  function got(field, expected, kind, value) {
    const at = field ? `${field}: ` : ''
    const what = kind ? ` got ${kind.toLowerCase()}${value ? ` ${value}` : ''}` : ''
    return `${at}expected ${expected ?? 'another type'}${what ? `,${what}` : ''}`
  }

  /** napi's argument refusal `e` as an InvalidInput naming the call `where`; any other error as it is. */
  function argumentError(e, where, cut) {
    if (e instanceof WraleError || e === null || typeof e !== 'object' || !napiArgumentStatuses.has(e.code)) return e
    const message = `${where}: invalid argument: ${describeNapiRefusal(e.code, String(e.message))}`
    const error = makeError('InvalidInput', 'invalid_argument', message, 'invalid_input')
    Object.defineProperty(error, 'cause', { value: e, writable: true, configurable: true })
    if (Error.captureStackTrace) Error.captureStackTrace(error, cut)
    return error
  }

  function guard(fn, where, promise) {
    const guarded = function (...args) {
      try {
        return Reflect.apply(fn, this, args)
      } catch (e) {
        const error = argumentError(e, where, guarded)
        if (promise) return Promise.reject(error)
        throw error
      }
    }
    Object.defineProperty(guarded, 'name', { value: fn.name, configurable: true })
    return guarded
  }

  /** Guards the methods and setters of a native class's prototype. */
  function guardProperties(proto, className) {
    for (const key of Object.getOwnPropertyNames(proto)) {
      if (key === 'constructor') continue
      const desc = Object.getOwnPropertyDescriptor(proto, key)
      const where = `${className}#${key}`
      if (typeof desc.value === 'function') {
        desc.value = guard(desc.value, where, returnsPromise(where))
      } else if (desc.set) {
        // A getter takes no argument; a setter takes one.
        desc.set = guard(desc.set, `${where} (setter)`, false)
      } else {
        continue
      }
      Object.defineProperty(proto, key, desc)
    }
  }

  // Each native class or function is exported as a guarded function standing
  // for it: `new` constructs the native class (a subclass's `new.target` too),
  // a call calls it, its statics are guarded copies, and it shares the native
  // `prototype`, so `instanceof` and `constructor` hold for every instance,
  // the ones the addon makes (factories, results) included. (A Proxy of the
  // native class cannot do it: napi-rs defines the statics read-only and
  // non-configurable, and a Proxy must report those unchanged.)
  for (const name of natives) {
    const native = exports[name]
    if (typeof native !== 'function') continue
    const guarded = function (...args) {
      try {
        return new.target
          ? Reflect.construct(native, args, new.target === guarded ? native : new.target)
          : Reflect.apply(native, this, args)
      } catch (e) {
        throw argumentError(e, new.target ? `new ${name}` : name, guarded)
      }
    }
    Object.defineProperty(guarded, 'name', { value: name, configurable: true })
    for (const key of Object.getOwnPropertyNames(native)) {
      if (['prototype', 'length', 'name', 'arguments', 'caller'].includes(key)) continue
      const desc = Object.getOwnPropertyDescriptor(native, key)
      if (typeof desc.value === 'function') {
        const where = `${name}.${key}`
        desc.value = guard(desc.value, where, returnsPromise(where))
      }
      Object.defineProperty(guarded, key, { ...desc, writable: true, configurable: true })
    }
    if (native.prototype) {
      guardProperties(native.prototype, name)
      guarded.prototype = native.prototype
      Object.defineProperty(native.prototype, 'constructor', { value: guarded, writable: true, configurable: true })
    }
    Object.defineProperty(exports, name, { value: guarded, enumerable: true, writable: true, configurable: true })
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
