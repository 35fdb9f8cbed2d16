import Foundation
import MeshFuzzing

/// `mesh-fuzz`: the ``FuzzTarget``s as a program.
///
/// - Built as usual, it replays inputs: `mesh-fuzz TARGET FILE|DIR…` runs every file
///   through the target and exits 1 at the first that fails.
/// - Either way, `mesh-fuzz --seeds DIR` writes each target's seeds to
///   `DIR/<target>/seed-<name>`.
/// - Built with `-sanitize=fuzzer,address -D FUZZING` (`scripts/fuzz`), it is a libFuzzer
///   binary for the target named by `MESH_FUZZ_TARGET`, taking libFuzzer's options.
@main
enum MeshFuzz {
    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.first == "--seeds", arguments.count == 2 {
            return Self.writeSeeds(to: arguments[1])
        }
        #if FUZZING
        guard Self.target != nil else {
            FileHandle.standardError.write(Data("set MESH_FUZZ_TARGET to one of: \(Self.names)\n".utf8))
            exit(2)
        }
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzOne))
        #else
        Self.replay(arguments)
        #endif
    }

    static let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")

    static func replay(_ arguments: [String]) {
        guard let name = arguments.first, let target = FuzzTarget(rawValue: name), arguments.count > 1 else {
            print("usage: mesh-fuzz TARGET FILE|DIR…   (targets: \(Self.names))")
            exit(2)
        }
        var count = 0
        for path in arguments.dropFirst() {
            for file in Self.files(at: path) {
                guard let data = FileManager.default.contents(atPath: file) else {
                    print("\(file): cannot be read")
                    exit(2)
                }
                do {
                    try target.run(Array(data))
                } catch {
                    print("\(file): \(error)")
                    exit(1)
                }
                count += 1
            }
        }
        print("\(name): \(count) inputs, no failure")
    }

    static func writeSeeds(to directory: String) {
        for target in FuzzTarget.allCases {
            let folder = "\(directory)/\(target.rawValue)"
            try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            for seed in target.seeds {
                guard FileManager.default.createFile(atPath: "\(folder)/seed-\(seed.name)", contents: Data(seed.bytes)) else {
                    print("\(folder)/seed-\(seed.name): cannot be written")
                    exit(2)
                }
            }
            print("\(target.rawValue): \(target.seeds.count) seeds")
        }
    }

    /// `path` itself, or the regular files in it (sorted), for a directory.
    static func files(at path: String) -> [String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            return [path]
        }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return names.sorted().map { "\(path)/\($0)" }
    }

    #if FUZZING
    /// The target libFuzzer runs, from `MESH_FUZZ_TARGET`.
    static let target = ProcessInfo.processInfo.environment["MESH_FUZZ_TARGET"].flatMap(FuzzTarget.init(rawValue:))
    #endif
}

#if FUZZING
/// libFuzzer's driver, called instead of linking its `main`, so the program keeps one
/// entry point in both builds.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

/// One input: a thrown ``FuzzFailure`` is a crash, so libFuzzer keeps the input.
private func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    do {
        try MeshFuzz.target!.run(input)
    } catch {
        fatalError("\(MeshFuzz.target!.rawValue): \(error)")
    }
    return 0
}
#endif
