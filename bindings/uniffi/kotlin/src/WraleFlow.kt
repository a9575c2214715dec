// Hand-written Kotlin helpers on top of the generated binding (package wrale).
package wrale

import kotlinx.coroutines.channels.awaitClose
import kotlinx.coroutines.channels.trySendBlocking
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.callbackFlow

/** The event stream ended with an error (`code: message` of the Rust error). */
class EventStreamException(message: String) : Exception(message)

/**
 * fleetd's live event stream as a cold [Flow]: collecting it subscribes
 * ([FleetClient.subscribe]), cancelling the collector stops the subscription.
 * The flow completes when fleetd closes the stream and fails with
 * [EventStreamException] when the stream breaks.
 */
fun FleetClient.events(
    kinds: List<String> = emptyList(),
    device: String? = null,
    group: String? = null,
): Flow<FleetEvent> = callbackFlow {
    val listener = object : EventListener {
        override fun onEvent(event: FleetEvent) {
            trySendBlocking(event)
        }

        override fun onEnd(error: String?) {
            if (error == null) close() else close(EventStreamException(error))
        }
    }
    val subscription = subscribe(listener, kinds, device, group)
    awaitClose {
        subscription.stop()
        subscription.close()
    }
}
