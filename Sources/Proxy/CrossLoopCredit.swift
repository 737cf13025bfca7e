import Synchronization

/// Flow control for work handed from one event loop to another: at most ``window`` items on their way. The sender
/// counts an item out, the receiver counts it back in; only a sender that stopped because the window was full needs
/// to be woken (on its own loop), so the common case costs two atomic operations and no extra hop.
final class CrossLoopCredit: Sendable {
    /// Items (read bursts, client sends) that may be on their way at once: enough that request and reply traffic
    /// never waits, few enough that a slow receiver holds at most a few reads' worth.
    static let window = 4

    private let inFlight = Atomic<Int>(0)
    private let senderWaiting = Atomic<Bool>(false)

    /// The sender counts out one item.
    func send() {
        self.inFlight.wrappingAdd(1, ordering: .acquiringAndReleasing)
    }

    /// Whether the sender may go on (read more); if not, it is woken by the receive that makes room.
    func mayContinue() -> Bool {
        if self.inFlight.load(ordering: .acquiring) < Self.window { return true }
        self.senderWaiting.store(true, ordering: .releasing)
        // Room made between the check and the flag: go on, and take the flag back.
        if self.inFlight.load(ordering: .acquiring) < Self.window {
            self.senderWaiting.store(false, ordering: .releasing)
            return true
        }
        return false
    }

    /// The receiver took one item. True when the sender was waiting for room and must be woken.
    func received() -> Bool {
        self.inFlight.wrappingSubtract(1, ordering: .acquiringAndReleasing)
        return self.senderWaiting.exchange(false, ordering: .acquiringAndReleasing)
    }
}
