public import Foundation
internal import Synchronization

/// The outcome of running an external program.
public struct ToolResult: Sendable {
    /// The exit status.
    public let status: Int32
    /// Standard output.
    public let standardOutput: String
    /// Standard error.
    public let standardError: String

    /// Output and error together (for assertion messages).
    public var combined: String { self.standardOutput + self.standardError }
}

/// Runs independent peers and system tools (openssl, ip, iptables) from tests.
public enum ExternalTool {
    /// Whether `name` is on the PATH.
    public static func isAvailable(_ name: String) -> Bool {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").contains { directory in
            FileManager.default.isExecutableFile(atPath: "\(directory)/\(name)")
        }
    }

    /// Runs `arguments[0]` with the rest as arguments (looked up on the PATH), optionally
    /// feeding `input` on stdin, and returns its status and output.
    ///
    /// A tool that is still running after `timeout` is killed (SIGKILL) and reported with
    /// status 137 and a note on stderr, so a stuck peer fails its test instead of hanging
    /// the whole run. The wait happens on a thread of its own (``offload(_:)``).
    @discardableResult
    public static func run(_ arguments: [String], input: String? = nil, timeout: Duration = .seconds(60)) async throws -> ToolResult {
        try await offload { try runBlocking(arguments, input: input, timeout: timeout) }
    }

    /// ``run(_:input:timeout:)`` on the calling thread, for places that cannot await: a
    /// test trait's condition, a `deinit`. Never call it from async code — it blocks a
    /// thread of the Swift concurrency pool for as long as the tool runs.
    @discardableResult
    public static func runBlocking(_ arguments: [String], input: String? = nil, timeout: Duration = .seconds(60)) throws -> ToolResult {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let output = Pipe()
        let error = Pipe()
        let stdin = Pipe()
        process.standardOutput = output
        process.standardError = error
        process.standardInput = stdin
        try process.run()
        let pid = process.processIdentifier
        let finished = Atomic<Bool>(false)
        let killedByTimeout = Atomic<Bool>(false)
        let (seconds, attoseconds) = timeout.components
        let watchdog = Thread {
            var remaining = Double(seconds) + Double(attoseconds) / 1e18
            while remaining > 0, !finished.load(ordering: .acquiring) {
                usleep(50_000)
                remaining -= 0.05
            }
            if !finished.load(ordering: .acquiring) {
                killedByTimeout.store(true, ordering: .releasing)
                kill(pid, SIGKILL)
            }
        }
        watchdog.start()
        if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
        try stdin.fileHandleForWriting.close()
        // Read both pipes before waiting so a chatty tool cannot block on a full pipe.
        let outData = output.fileHandleForReading.readDataToEndOfFile()
        let errData = error.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        finished.store(true, ordering: .releasing)
        var standardError = String(decoding: errData, as: UTF8.self)
        if killedByTimeout.load(ordering: .acquiring) {
            standardError += "\n[killed after \(timeout): \(arguments.joined(separator: " "))]\n"
        }
        return ToolResult(
            status: process.terminationStatus,
            standardOutput: String(decoding: outData, as: UTF8.self),
            standardError: standardError
        )
    }
}

/// A temporary directory removed when the value is deinitialised.
public final class TemporaryDirectory: Sendable {
    /// The directory.
    public let url: URL

    /// Creates a fresh directory under the system temporary directory.
    public init(prefix: String = "swift-hbone-test") throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        self.url = url
    }

    /// Writes `contents` to `name` inside the directory and returns its path.
    @discardableResult
    public func write(_ name: String, _ contents: String) throws -> String {
        let url = self.url.appendingPathComponent(name)
        try Data(contents.utf8).write(to: url)
        return url.path
    }

    deinit {
        try? FileManager.default.removeItem(at: self.url)
    }
}

/// What this machine lets tests do; tests that need more skip with a message naming it.
public enum Capability {
    /// Running as root (needed for netns, iptables, ipset).
    public static var isRoot: Bool { geteuid() == 0 }

    /// `::1` can be bound (IPv6 is not disabled).
    public static var hasIPv6Loopback: Bool {
        let fd = socket(AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in6()
        address.sin6_family = sa_family_t(AF_INET6)
        address.sin6_addr = in6addr_loopback
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
        } == 0
    }

    /// Root and `ip netns` work: the test can create network namespaces.
    public static var canCreateNetworkNamespaces: Bool {
        guard isRoot, ExternalTool.isAvailable("ip") else { return false }
        let name = "hbone-probe-\(getpid())"
        guard (try? ExternalTool.runBlocking(["ip", "netns", "add", name]))?.status == 0 else { return false }
        _ = try? ExternalTool.runBlocking(["ip", "netns", "del", name])
        return true
    }
}

/// A long-running independent peer (an HBONE server or client in Python or C) that prints
/// `listening <port>` on stdout once it is ready; terminated when stopped or deinitialised.
public final class ExternalPeer: Sendable {
    /// The port from the `listening <port>` line.
    public let port: Int
    private let process: Process
    private let log = LogBuffer()

    private final class LogBuffer: Sendable {
        private let data = Mutex<Data>(Data())
        func append(_ chunk: Data) { self.data.withLock { $0.append(chunk) } }
        var text: String { String(decoding: self.data.withLock { $0 }, as: UTF8.self) }
    }

    /// Starts `arguments` and waits (up to 20 s) for its first stdout line to start with
    /// `readyLine` (by default `listening <port>`; the port is 0 for other ready lines).
    public init(_ arguments: [String], readyLine: String = "listening ") async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        self.process = process
        // Drain stderr all along, so a chatty peer never blocks on a full pipe, and so
        // `logs` shows what it wrote so far: each read(2) is appended as it returns
        // (`FileHandle.read(upToCount:)` waits for the full count or EOF, which hid the logs
        // until the peer exited; `availableData` traps on a read error).
        let log = self.log
        let errorReader = errors.fileHandleForReading
        Thread {
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let count = buffer.withUnsafeMutableBytes { read(errorReader.fileDescriptor, $0.baseAddress, $0.count) }
                if count < 0, errno == EINTR { continue }
                guard count > 0 else { break }
                log.append(Data(buffer[0..<count]))
            }
        }.start()
        let reader = output.fileHandleForReading
        let line = Mutex<String?>(nil)
        let thread = Thread {
            var bytes: [UInt8] = []
            while let byte = try? reader.read(upToCount: 1), let first = byte.first, first != UInt8(ascii: "\n") {
                bytes.append(first)
            }
            line.withLock { $0 = String(decoding: bytes, as: UTF8.self) }
        }
        thread.start()
        let text = try await offload {
            let deadline = Date().addingTimeInterval(20)
            while Date() < deadline, line.withLock({ $0 }) == nil, process.isRunning { usleep(10_000) }
            return line.withLock { $0 } ?? ""
        }
        guard text.hasPrefix(readyLine) else {
            process.terminate()
            throw PeerDidNotStart(command: arguments.joined(separator: " "), output: text)
        }
        self.port = Int(text.dropFirst(readyLine.count)) ?? 0
    }

    /// Stops the peer and returns what it wrote to stderr (its logs).
    @discardableResult
    public func stop() -> String {
        if self.process.isRunning {
            // SIGTERM, then SIGKILL after 2 s: a peer with a connection still open (our
            // pool keeps one) may not exit on SIGTERM alone.
            self.process.terminate()
            for _ in 0..<200 where self.process.isRunning { usleep(10_000) }
            if self.process.isRunning { kill(self.process.processIdentifier, SIGKILL) }
            self.process.waitUntilExit()
        }
        usleep(50_000)
        return self.log.text
    }

    /// What the peer wrote to stderr so far.
    public var logs: String { self.log.text }

    deinit {
        if self.process.isRunning { kill(self.process.processIdentifier, SIGKILL) }
    }
}

/// An ``ExternalPeer`` exited or printed something else before `listening <port>`.
public struct PeerDidNotStart: Error, CustomStringConvertible {
    /// The command line.
    public let command: String
    /// What it printed instead.
    public let output: String
    public var description: String { "\(self.command) did not start (printed: \(self.output))" }
}
