internal import CLinuxNet

#if canImport(Glibc)
internal import Glibc
#endif

/// Runs a program with `posix_spawn`, feeds it stdin, collects stdout and stderr, and kills
/// it after a deadline. Spawned from the calling thread, so a child started on a
/// ``NetworkNamespace`` thread lives in that namespace.
struct Subprocess {
    /// The outcome of a finished run.
    struct Output {
        var status: Int32
        var standardOutput: String
        var standardError: String
    }

    /// Directories searched after `PATH` (iptables lives in sbin, which a plain user's `PATH` may lack).
    static let extraSearchPath = ["/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin"]

    /// The absolute path of `program`, searched in `PATH` and the sbin directories; `nil` if absent.
    static func locate(_ program: String) -> String? {
        if program.contains("/") { return access(program, X_OK) == 0 ? program : nil }
        let path = getenv("PATH").map { String(cString: $0) } ?? ""
        let directories = path.split(separator: ":").map(String.init) + Self.extraSearchPath
        return directories.lazy.map { "\($0)/\(program)" }.first { access($0, X_OK) == 0 }
    }

    /// Runs `arguments` (the first is the program, looked up with ``locate(_:)``).
    static func run(
        _ arguments: [String], input: String = "", environment extra: [String: String] = [:], timeoutSeconds: Int32 = 30
    ) throws(RedirectError) -> Output {
        guard let program = arguments.first, let executable = Self.locate(program) else {
            throw RedirectError(.iptablesMissing, "\(arguments.first ?? "") not found in PATH or sbin")
        }
        var stdinPipe: [Int32] = [0, 0], stdoutPipe: [Int32] = [0, 0], stderrPipe: [Int32] = [0, 0]
        guard clinuxnet_pipe_cloexec(&stdinPipe) == 0, clinuxnet_pipe_cloexec(&stdoutPipe) == 0, clinuxnet_pipe_cloexec(&stderrPipe) == 0 else {
            throw RedirectError(.iptablesFailed, errno: errno, "pipe2")
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, stdinPipe[0], 0)
        posix_spawn_file_actions_adddup2(&actions, stdoutPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, stderrPipe[1], 2)

        var environment: [String] = []
        var cursor = environ
        while let entry = cursor.pointee {
            let text = String(cString: entry)
            let key = String(text.prefix { $0 != "=" })
            if extra[key] == nil { environment.append(text) }
            cursor += 1
        }
        environment += extra.map { "\($0.key)=\($0.value)" }

        var pid: pid_t = 0
        let spawnStatus = Self.withCStrings([executable] + arguments.dropFirst()) { argv in
            Self.withCStrings(environment) { envp in
                posix_spawn(&pid, executable, &actions, nil, argv, envp)
            }
        }
        close(stdinPipe[0]); close(stdoutPipe[1]); close(stderrPipe[1])
        guard spawnStatus == 0 else {
            close(stdinPipe[1]); close(stdoutPipe[0]); close(stderrPipe[0])
            throw RedirectError(.iptablesMissing, errno: spawnStatus, "posix_spawn \(executable)")
        }
        let (output, error, timedOut) = Self.pump(
            input: Array(input.utf8), stdin: stdinPipe[1], stdout: stdoutPipe[0], stderr: stderrPipe[0],
            timeoutMilliseconds: timeoutSeconds * 1000
        )
        if timedOut { kill(pid, SIGKILL) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0, errno == EINTR {}
        if timedOut {
            throw RedirectError(.iptablesFailed, "\(arguments.joined(separator: " ")) did not finish within \(timeoutSeconds) s")
        }
        let exitCode = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return Output(
            status: exitCode, standardOutput: String(decoding: output, as: UTF8.self),
            standardError: String(decoding: error, as: UTF8.self)
        )
    }

    /// Writes `input` and reads both outputs with `poll` until EOF on both or the deadline.
    private static func pump(
        input: [UInt8], stdin: Int32, stdout: Int32, stderr: Int32, timeoutMilliseconds: Int32
    ) -> (output: [UInt8], error: [UInt8], timedOut: Bool) {
        var output: [UInt8] = [], error: [UInt8] = []
        var written = 0
        var inputOpen = true
        if input.isEmpty { close(stdin); inputOpen = false }
        var open: Set<Int32> = [stdout, stderr]
        var buffer = [UInt8](repeating: 0, count: 16384)
        var remaining = timeoutMilliseconds
        signal(SIGPIPE, SIG_IGN)
        while !open.isEmpty || inputOpen {
            var fds = open.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            if inputOpen { fds.append(pollfd(fd: stdin, events: Int16(POLLOUT), revents: 0)) }
            let started = Self.monotonicMilliseconds()
            let ready = poll(&fds, nfds_t(fds.count), remaining)
            remaining -= Int32(Self.monotonicMilliseconds() - started)
            if ready < 0, errno == EINTR { continue }
            if ready <= 0 || remaining <= 0 {
                open.forEach { close($0) }
                if inputOpen { close(stdin) }
                return (output, error, true)
            }
            for entry in fds where entry.revents != 0 {
                if entry.fd == stdin {
                    let count = input[written...].withUnsafeBytes { write(stdin, $0.baseAddress, $0.count) }
                    if count > 0 { written += count }
                    if count < 0 || written == input.count { close(stdin); inputOpen = false }
                    continue
                }
                let count = buffer.withUnsafeMutableBytes { read(entry.fd, $0.baseAddress, $0.count) }
                if count > 0 {
                    if entry.fd == stdout { output += buffer[0..<count] } else { error += buffer[0..<count] }
                } else if count == 0 || errno != EINTR {
                    close(entry.fd)
                    open.remove(entry.fd)
                }
            }
        }
        return (output, error, false)
    }

    private static func monotonicMilliseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }

    private static func withCStrings<R>(_ strings: [String], _ body: ([UnsafeMutablePointer<CChar>?]) -> R) -> R {
        var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
        pointers.append(nil)
        defer { pointers.forEach { free($0) } }
        return body(pointers)
    }
}
