import BoundedYAML
import Testing
import Yams

/// YAML aliases bounded: the exponential documents ("billion laughs") are refused quickly,
/// wherever the aliases sit, and ordinary YAML — aliases used as people use them, `*` in
/// strings and globs — reads as Yams reads it.
@Suite("Bounded YAML")
struct BoundedYAMLTests {
    /// Ten levels of ten aliases: 10^9 strings from about 400 bytes.
    static let anchors = (1..<9).map { level in
        "a\(level): &a\(level) [" + Array(repeating: "*a\(level - 1)", count: 10).joined(separator: ",") + "]"
    }.reduce("a0: &a0 [x,x,x,x,x,x,x,x,x,x]") { $0 + "\n" + $1 }

    static func refusal(_ text: String) -> (documents: Int, reason: String?, line: Int?) {
        let clock = ContinuousClock()
        let start = clock.now
        let (documents, stop) = BoundedYAML.composeAll(text)
        #expect(clock.now - start < .seconds(20), "refused by counting, not by running out of time")
        if case .refused(_, let line, let reason)? = stop { return (documents.count, reason, line) }
        return (documents.count, nil, nil)
    }

    @Test("an alias bomb as a value is refused at the limit; the documents before it are read")
    func valueBomb() {
        let result = Self.refusal("ok: 1\n---\n" + Self.anchors + "\nall: *a8\n")
        #expect(result.documents == 1)
        #expect(result.reason == "YAML aliases expand the file to more than \(BoundedYAML.maximumValues) values at document 2")
        #expect(result.line == 3)
    }

    @Test("an alias bomb as a mapping key is refused before Yams hashes it", arguments: [
        "? *a8\n: 1\n", "*a8 : 1\n", "? [x, *a8]\n: 1\n", "{x: *a8}: 1\n", "outer: {[*a8]: 1}\n",
    ])
    func keyBomb(key: String) {
        let result = Self.refusal(Self.anchors + "\n" + key)
        #expect(result.documents == 0)
        #expect(result.reason?.hasPrefix("an alias inside a mapping key at line 10 of document 1") == true, "\(String(describing: result.reason))")
    }

    @Test("aliases nesting past 1 000 levels are refused")
    func deepNesting() {
        // Each anchor wraps the one before in 900 sequences: the text stays under libyaml's
        // own limit, the expansion does not.
        var text = "l0: &l0 x\n"
        for level in 1...3 {
            text += "l\(level): &l\(level) " + String(repeating: "[", count: 900) + "*l\(level - 1)" + String(repeating: "]", count: 900) + "\n"
        }
        #expect(Self.refusal(text).reason == "YAML aliases nest document 1 deeper than \(BoundedYAML.maximumDepth) levels")
    }

    @Test("aliases as people use them, and `*` in strings, keys and globs, read as Yams reads them")
    func ordinary() throws {
        let text = """
            defaults: &defaults {cpu: 100m, memory: 64Mi}
            a: {resources: *defaults, paths: ["/api/*", '*'], glob: a*b}
            "*.conf": quoted key
            script: |
              rm -f *.tmp
              *not an alias: in a block scalar
            ---
            - *defaults
            """
        let (documents, stop) = BoundedYAML.composeAll(text)
        #expect(stop == nil)
        #expect(documents == (try Yams.compose_all(yaml: text).map { $0 }))
        #expect(documents[0]["a"]?["resources"]?["memory"]?.string == "64Mi")
        #expect(documents[0]["*.conf"]?.string == "quoted key")
    }

    @Test("invalid YAML is Yams' error, with the documents before it")
    func invalid() {
        let (documents, stop) = BoundedYAML.composeAll("a: 1\n---\nb: [unclosed\n")
        #expect(documents.count == 1)
        guard case .invalid(let error)? = stop else { Issue.record("not refused as invalid: \(String(describing: stop))"); return }
        #expect(error is YamlError)
        // An undefined alias is an error of the text, not of the alias-free copy.
        guard case .invalid? = BoundedYAML.composeAll("a: *nowhere\n").stop else { Issue.record("undefined alias accepted"); return }
    }
}
