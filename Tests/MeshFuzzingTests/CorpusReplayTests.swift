import Foundation
import MeshFuzzing
import MeshTestSupport
import Testing

/// The fuzz targets (`Tests/Fuzz/MeshFuzzing`, Docs/fuzzing.md) on the committed corpus:
/// every input libFuzzer kept for coverage, and every input that once found a bug, must
/// pass on every test run, not only when someone fuzzes.
@Suite("Fuzz corpus")
struct CorpusReplayTests {
    static let corpus = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fuzz/Corpus")

    @Test("the committed corpus passes its target, and reaches both accepted and refused inputs",
          arguments: FuzzTarget.allCases)
    func replay(target: FuzzTarget) async throws {
        let folder = Self.corpus.appendingPathComponent(target.rawValue)
        let files = try FileManager.default.contentsOfDirectory(at: folder, includingPropertiesForKeys: nil)
        #expect(files.count >= 20, "\(target.rawValue): only \(files.count) corpus inputs; run scripts/fuzz")
        // Hundreds of inputs through whole parsers take seconds: on a thread of their own,
        // not on the concurrency pool that the tests running alongside need.
        let (accepted, failures) = try await offload { () -> (Int, [String]) in
            var accepted = 0
            var failures: [String] = []
            for file in files {
                do {
                    if try target.run(Array(Data(contentsOf: file))) { accepted += 1 }
                } catch {
                    failures.append("\(target.rawValue)/\(file.lastPathComponent): \(error)")
                }
            }
            return (accepted, failures)
        }
        for failure in failures { Issue.record(Comment(rawValue: failure)) }
        #expect(accepted > 0, "\(target.rawValue): no corpus input is accepted")
        #expect(accepted < files.count, "\(target.rawValue): no corpus input is refused")
    }

    @Test("every seed is accepted: the seeds exercise the parsing paths, not only the refusals",
          arguments: FuzzTarget.allCases)
    func seeds(target: FuzzTarget) throws {
        let seeds = target.seeds
        #expect(seeds.count >= 2)
        for seed in seeds where !seed.name.hasPrefix("bad-") && seed.name != "no-command" && seed.name != "goaway"
            && seed.name != "data-on-stream-0" {
            #expect(try target.run(seed.bytes), "\(target.rawValue) seed \(seed.name) is refused")
        }
    }
}
