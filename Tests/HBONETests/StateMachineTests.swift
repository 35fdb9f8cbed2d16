@testable import HBONE
import Testing

@Suite("HBONE state machines")
struct HBONEStateMachineTests {
    @Test("keepalive: PING every 10 s regardless of traffic, dead 20 s after an unanswered PING")
    func keepalive() {
        var machine = KeepaliveStateMachine(interval: .seconds(10), timeout: .seconds(20), now: .zero)
        #expect(machine.nextDeadline == .seconds(10))
        #expect(machine.tick(now: .seconds(9)) == .none)
        guard case .sendPing(let first) = machine.tick(now: .seconds(10)) else {
            Issue.record("no PING at 10 s")
            return
        }
        machine.pingAckReceived(first &+ 1)  // an unrelated ACK does not count
        guard case .sendPing = machine.tick(now: .seconds(20)) else {
            // The first PING is still outstanding: no second PING, and the deadline stays at 30 s.
            #expect(machine.nextDeadline == .seconds(30))
            #expect(machine.tick(now: .seconds(29)) == .none)
            #expect(machine.tick(now: .seconds(30)) == .declareDead)
            #expect(machine.isDead)
            #expect(machine.tick(now: .seconds(40)) == .none)
            return
        }
        Issue.record("a second PING was sent while the first was unanswered")
    }

    @Test("keepalive: answered PINGs keep the connection alive indefinitely")
    func keepaliveAnswered() {
        var machine = KeepaliveStateMachine(interval: .seconds(10), timeout: .seconds(20), now: .zero)
        var now = Duration.zero
        for _ in 0..<100 {
            now = machine.nextDeadline
            guard case .sendPing(let payload) = machine.tick(now: now) else {
                Issue.record("expected a PING at \(now)")
                return
            }
            machine.pingAckReceived(payload)
        }
        #expect(!machine.isDead)
        #expect(now == .seconds(1000))
    }

    @Test("pool: single flight per key, waiters reuse, new connection when full, eviction when idle")
    func pool() {
        var pool = PoolStateMachine<String>()
        #expect(pool.checkout("a") == .connect)
        for _ in 0..<5 { #expect(pool.checkout("a") == .wait) }
        #expect(pool.checkout("b") == .connect, "other keys are independent")
        let id = pool.connected("a", maximumStreams: 3)
        #expect(pool.checkout("a") == .use(id))
        #expect(pool.checkout("a") == .use(id))
        #expect(pool.streamCount(for: "a") == 3)
        #expect(pool.checkout("a") == .connect, "full connection: connect another")
        #expect(pool.checkout("a") == .wait)
        let second = pool.connected("a", maximumStreams: 3)
        #expect(pool.connectionCount(for: "a") == 2)
        pool.release("a", id, now: .seconds(1))
        #expect(pool.checkout("a") == .use(id), "lowest id with capacity first")
        #expect(pool.nextEviction(timeout: .seconds(300)) == nil, "nothing idle: no timer")
        let idle = (0..<3).map { _ in pool.release("a", id, now: .seconds(2)) }
        #expect(idle == [false, false, true], "idle once its last stream ends")
        #expect(pool.nextEviction(timeout: .seconds(300)) == .seconds(302))
        pool.release("a", second, now: .seconds(5))
        #expect(pool.nextEviction(timeout: .seconds(300)) == .seconds(302), "the earliest idle connection decides")
        #expect(pool.evictIdle(now: .seconds(100), timeout: .seconds(300)).isEmpty)
        #expect(pool.evictIdle(now: .seconds(302), timeout: .seconds(300)).count == 1)
        #expect(pool.nextEviction(timeout: .seconds(300)) == .seconds(305), "the timer is re-armed for the next one")
        #expect(pool.evictIdle(now: .seconds(305), timeout: .seconds(300)).count == 1)
        #expect(pool.nextEviction(timeout: .seconds(300)) == nil)
        #expect(pool.connectionCount(for: "a") == 0)
        pool.connectFailed("b")
        #expect(pool.checkout("b") == .connect, "a failed connect lets the next checkout try again")
    }

    @Test("pool: the server's stream limit caps a connection from then on; 0 takes it out of rotation")
    func poolPeerLimit() {
        var pool = PoolStateMachine<String>()
        _ = pool.checkout("a")
        let id = pool.connected("a", maximumStreams: 100)
        pool.limit("a", id, maximumStreams: 2)
        #expect(pool.checkout("a") == .use(id))
        #expect(pool.checkout("a") == .connect, "two streams is the server's limit")
        let second = pool.connected("a", maximumStreams: 100)
        pool.limit("a", second, maximumStreams: 0)
        #expect(pool.checkout("a") == .connect, "a connection limited to 0 takes no stream")
        #expect(pool.streamCount(for: "a") == 3, "the streams it carries stay counted")
        pool.release("a", id, now: .seconds(1))
        #expect(pool.checkout("a") == .use(id), "room again below the limit")
    }

    @Test("drain: GOAWAY 2^31-1 and a PING; after its ACK a GOAWAY naming the last stream; closed when the last stream ends")
    func drain() {
        var machine = DrainStateMachine()
        machine.streamOpened(1)
        machine.streamOpened(5)
        let whileServing = machine.streamClosed()
        #expect(whileServing == nil, "serving: a stream ends, nothing else happens")
        let start = machine.startDrain()
        #expect(start == [.sendGoAway(lastStreamID: Int32.max), .sendPing(DrainStateMachine.pingPayload)])
        let again = machine.startDrain()
        #expect(again.isEmpty, "one drain")
        machine.streamOpened(7)  // in flight when the first GOAWAY left
        let keepalive = machine.pingAckReceived(0x4842_4F4E_0000_0001)
        #expect(keepalive.isEmpty, "keepalive's PING ACK is not the drain's")
        let roundTrip = machine.pingAckReceived(DrainStateMachine.pingPayload)
        #expect(roundTrip == [.sendGoAway(lastStreamID: 7)], "streams 5 and 7 still open")
        let first = machine.streamClosed()
        let last = machine.streamClosed()
        let after = machine.streamClosed()
        #expect(first == nil)
        #expect(last == .close)
        #expect(after == nil, "closed once")
    }

    @Test("drain: a connection without streams closes when the round trip completes")
    func drainIdle() {
        var machine = DrainStateMachine()
        _ = machine.startDrain()
        let roundTrip = machine.pingAckReceived(DrainStateMachine.pingPayload)
        #expect(roundTrip == [.sendGoAway(lastStreamID: 0), .close])
    }

    @Test("pool: a GOAWAY'd connection is never handed out again")
    func poolRemove() {
        var pool = PoolStateMachine<String>()
        _ = pool.checkout("a")
        let id = pool.connected("a", maximumStreams: 10)
        pool.remove("a", id)
        #expect(pool.checkout("a") == .connect)
    }

    @Test("client connection: after the server's GOAWAY it closes when its last stream ends, once; without GOAWAY never on its own")
    func clientLifecycle() {
        var connection = ClientConnectionLifecycle()
        connection.streamOpened()
        connection.streamOpened()
        let first = connection.streamClosed()
        #expect(!first, "no GOAWAY: an idle connection stays for the pool")
        connection.streamOpened()
        let goAway = connection.goAwayReceived()
        #expect(!goAway, "two streams still open")
        let one = connection.streamClosed()
        #expect(!one)
        let last = connection.streamClosed()
        #expect(last, "the last stream ended after the GOAWAY")
        let again = connection.goAwayReceived()
        #expect(!again, "closing already")
        let evicted = connection.closeRequested()
        #expect(!evicted, "one close")

        var idle = ClientConnectionLifecycle()
        let immediately = idle.goAwayReceived()
        #expect(immediately, "a GOAWAY on an idle connection closes it at once")

        var evictedFirst = ClientConnectionLifecycle()
        let eviction = evictedFirst.closeRequested()
        #expect(eviction)
        let afterEviction = evictedFirst.goAwayReceived()
        #expect(!afterEviction)

        // A close begun elsewhere (keepalive, TLS, the peer): no new streams from then on.
        var dying = ClientConnectionLifecycle()
        dying.streamOpened()
        #expect(dying.acceptsStreams)
        let retire = dying.closeStarted()
        #expect(retire, "the first close retires the connection")
        #expect(!dying.acceptsStreams)
        let retireAgain = dying.closeStarted()
        #expect(!retireAgain, "retired once")
        let closeAfterwards = dying.closeRequested()
        #expect(!closeAfterwards, "no second close of our own")
        var goneAway = ClientConnectionLifecycle()
        goneAway.streamOpened()
        _ = goneAway.goAwayReceived()
        let retiredByGoAway = goneAway.closeStarted()
        #expect(!goneAway.acceptsStreams && !retiredByGoAway, "a GOAWAY retired it already")

        // RFC 9113 §6.8: streams above the GOAWAY's last stream ID were not processed.
        var drained = ClientConnectionLifecycle()
        #expect(drained.processed(streamID: 99), "no GOAWAY: any stream may have been processed")
        drained.streamOpened()
        _ = drained.goAwayReceived(lastStreamID: 5)
        #expect(drained.processed(streamID: 5) && !drained.processed(streamID: 7))
        _ = drained.goAwayReceived(lastStreamID: 9)
        #expect(!drained.processed(streamID: 7), "a later GOAWAY cannot raise the last stream ID")
    }
}
