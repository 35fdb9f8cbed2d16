import Foundation
import MeshTestSupport
import Testing

/// The `ambient-migrate` binary this test run was built with.
@Suite("ambient-migrate command line")
struct CommandLineTests {
    static let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("ambient-migrate").path
    static let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/shop").path

    @Test("text report, --emit writes manifests that parse, JSON output, exit status on bad input")
    func run() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.binary), "build the ambient-migrate product first (swift build --build-tests builds it)")
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ambient-emit-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }

        let text = try await ExternalTool.run([Self.binary, Self.fixture, "--emit", directory.path])
        #expect(text.status == 0, "\(text.combined)")
        #expect(!text.standardOutput.contains("\u{1B}["), "no colour when stdout is not a terminal")
        #expect(text.standardOutput.contains("AuthorizationPolicy backend/orders-methods"))
        #expect(text.standardOutput.contains("CRITICAL"))
        let written = try FileManager.default.contentsOfDirectory(atPath: directory.appendingPathComponent("backend").path).sorted()
        #expect(written == [
            "authorizationpolicy-orders-methods-via-waypoint.yaml", "authorizationpolicy-orders-methods-waypoint.yaml",
            "authorizationpolicy-payments-post-only-via-waypoint.yaml", "authorizationpolicy-payments-post-only-waypoint.yaml",
            "authorizationpolicy-postgres-backend-only-waypoint.yaml",
            "gateway-waypoint.yaml", "httproute-reviews.yaml", "service-reviews-v2.yaml",
        ])
        let twin = try String(contentsOf: directory.appendingPathComponent("backend/authorizationpolicy-orders-methods-waypoint.yaml"), encoding: .utf8)
        #expect(twin.contains("targetRefs:"))
        #expect(!twin.contains("selector"))

        let json = try await ExternalTool.run([Self.binary, "--output", "json", Self.fixture])
        #expect(json.status == 0)
        let object = try JSONSerialization.jsonObject(with: Data(json.standardOutput.utf8)) as? [String: Any]
        #expect((object?["findings"] as? [Any])?.count == 11)

        let bad = directory.appendingPathComponent("bad.yaml")
        try "kind: [".write(to: bad, atomically: true, encoding: .utf8)
        let failed = try await ExternalTool.run([Self.binary, bad.path, "--color", "never"])
        #expect(failed.status == 1)
        #expect(failed.standardOutput.contains("ERROR"), "\(failed.combined)")
        let usage = try await ExternalTool.run([Self.binary, "--output", "xml", Self.fixture])
        #expect(usage.status == 64)

        // Colour when stdout is a terminal (util-linux `script` gives it a pseudo-terminal),
        // not with NO_COLOR, always with --color always.
        if ExternalTool.isAvailable("script") {
            let tty = try await ExternalTool.run(["env", "-u", "NO_COLOR", "script", "-q", "-e", "-c", "\(Self.binary) \(Self.fixture)", "/dev/null"])
            #expect(tty.standardOutput.contains("\u{1B}[33;1mwaypoint"), "\(tty.combined.prefix(300))")
            let noColor = try await ExternalTool.run(["env", "NO_COLOR=1", "script", "-q", "-e", "-c", "\(Self.binary) \(Self.fixture)", "/dev/null"])
            #expect(!noColor.standardOutput.contains("\u{1B}["))
        }
        let forced = try await ExternalTool.run([Self.binary, Self.fixture, "--color", "always"])
        #expect(forced.standardOutput.contains("\u{1B}[41;97;1mCRITICAL"))
    }
}
