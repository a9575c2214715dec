// Test fixtures shared by several test files (not a test file itself: `node
// --test` runs test/*.test.js and test/*.test.mjs).
'use strict'

// A fleet policy layer with an interlock: GPIO 17 may not be driven high while
// the case is open, and it is refused with a PolicyViolation while the case
// state is unknown (no sample evaluated yet).
const INTERLOCK = `
scope = "fleet"
[security]
lock_gpio_when_case_open = true
[[interlock]]
id = "gpio17-case-open"
deny = { command = "set_gpio", pin = 17, level = "high" }
when = { case_open = true }
`

module.exports = { INTERLOCK }
