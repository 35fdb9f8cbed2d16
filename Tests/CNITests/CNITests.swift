import CNI
import Foundation
import MeshTestSupport
import Testing

/// A chained pass-through plugin like containernetworking's `plugins/sample`: requires
/// `prevResult` on ADD and prints it back at the request's version.
struct PassThrough: CNIPlugin {
    var about: String { "pass-through test plugin" }
    func add(_ request: CNIRequest) throws(CNIError) -> JSONValue {
        guard let previous = try request.previousResult() else {
            throw CNIError(.invalidConfiguration, "must be called as a chained plugin")
        }
        return try previous.json(version: request.cniVersion)
    }
    func delete(_ request: CNIRequest) throws(CNIError) {}
    func check(_ request: CNIRequest) throws(CNIError) {}
}

@Suite("CNI spec: environment, versions, results, errors")
struct CNITests {
    static let environment = [
        "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c0ffee-1", "CNI_NETNS": "/var/run/netns/cni-1",
        "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin:/usr/lib/cni",
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=1234",
    ]

    static func run(_ stdin: String, env: [String: String] = environment) -> (status: Int32, output: JSONValue?, error: String) {
        let outcome = CNISkeleton.run(PassThrough(), environment: env, stdin: Data(stdin.utf8))
        return (outcome.status, try? JSONValue(parsing: outcome.standardOutput), String(decoding: outcome.standardError, as: UTF8.self))
    }

    static let bridgeResult031 = """
    {"cniVersion":"0.3.1","interfaces":[{"name":"cni0","mac":"9a:62:14:fb:a4:63"},{"name":"veth6d5f1e38","mac":"3a:01:02:03:04:05"},{"name":"eth0","mac":"12:34:56:78:9a:bc","sandbox":"/var/run/netns/cni-1"}],"ips":[{"version":"4","interface":2,"address":"10.22.0.5/16","gateway":"10.22.0.1"}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{}}
    """

    @Test("CNI_ARGS, container ID and interface name are parsed and validated")
    func environmentParsing() throws {
        let env = try #require(try CNIEnvironment(Self.environment))
        #expect(env.command == .add)
        #expect(env.argument("K8S_POD_NAME") == "web-0")
        #expect(env.path == ["/opt/cni/bin", "/usr/lib/cni"])
        #expect(try CNIEnvironment([:]) == nil, "no CNI_COMMAND: the about text")
        var bad = Self.environment
        bad["CNI_CONTAINERID"] = "-starts-with-dash"
        #expect { try CNIEnvironment(bad) } throws: { ($0 as? CNIError)?.code == .invalidEnvironment }
        bad = Self.environment
        bad["CNI_IFNAME"] = "a-very-long-ifname"
        #expect { try CNIEnvironment(bad) } throws: { ($0 as? CNIError)?.code == .invalidEnvironment }
        bad = Self.environment
        bad["CNI_ARGS"] = "K8S_POD_NAME"
        #expect { try CNIEnvironment(bad) } throws: { ($0 as? CNIError)?.code == .invalidEnvironment }
    }

    @Test("missing env variables: code 4 naming them, in the request's cniVersion, exit 1")
    func missingEnvironment() {
        var env = Self.environment
        env["CNI_NETNS"] = nil
        env["CNI_IFNAME"] = nil
        let (status, output, _) = Self.run(#"{"cniVersion":"1.0.0","name":"n","type":"t"}"#, env: env)
        #expect(status == 1)
        #expect(output?["code"] == .number(4))
        #expect(output?["cniVersion"]?.stringValue == "1.0.0")
        #expect(output?["msg"]?.stringValue == "required env variables [CNI_NETNS,CNI_IFNAME] missing")
        // DEL does not need the netns.
        env["CNI_COMMAND"] = "DEL"
        env["CNI_IFNAME"] = "eth0"
        #expect(Self.run(#"{"cniVersion":"1.0.0","name":"n","type":"t"}"#, env: env).status == 0)
    }

    @Test("bad input: invalid JSON is code 6, an unknown cniVersion code 1, CHECK before 0.4.0 code 1, GC before 1.1.0 code 1")
    func badInput() {
        let invalid = Self.run("{not json")
        #expect(invalid.status == 1)
        #expect(invalid.output?["code"] == .number(6))
        let unknown = Self.run(#"{"cniVersion":"9.9.9","name":"n","type":"t","prevResult":{}}"#)
        #expect(unknown.output?["code"] == .number(1))
        #expect(unknown.output?["cniVersion"]?.stringValue == "9.9.9")
        var env = Self.environment
        env["CNI_COMMAND"] = "CHECK"
        #expect(Self.run(#"{"cniVersion":"0.3.1","name":"n","type":"t"}"#, env: env).output?["code"] == .number(1))
        #expect(Self.run(#"{"cniVersion":"0.4.0","name":"n","type":"t"}"#, env: env).status == 0)
        env["CNI_COMMAND"] = "GC"
        #expect(Self.run(#"{"cniVersion":"1.0.0","name":"n","type":"t"}"#, env: env).output?["code"] == .number(1))
        #expect(Self.run(#"{"cniVersion":"1.1.0","name":"n","type":"t"}"#, env: env).status == 0)
        env["CNI_COMMAND"] = "FROB"
        #expect(Self.run(#"{"cniVersion":"1.1.0","name":"n","type":"t"}"#, env: env).output?["code"] == .number(4))
        let malformedResult = Self.run(#"{"cniVersion":"1.0.0","name":"n","type":"t","prevResult":{"ips":[{"address":"10.0.0.1"}]}}"#)
        #expect(malformedResult.output?["code"] == .number(6), "an address without prefix length")
    }

    @Test("VERSION and the about text")
    func version() {
        var env = Self.environment
        env["CNI_COMMAND"] = "VERSION"
        let (status, output, _) = Self.run(#"{"cniVersion":"0.4.0"}"#, env: env)
        #expect(status == 0)
        #expect(output?["cniVersion"]?.stringValue == "0.4.0")
        #expect(output?["supportedVersions"] == .array(["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"].map { .string($0) }))
        let about = Self.run("", env: [:])
        #expect(about.status == 0)
        #expect(about.output == nil, "nothing on stdout")
        #expect(about.error.contains("CNI protocol versions supported: 0.1.0"))
    }

    @Test("a chained plugin passes prevResult through unchanged at every version from 0.3.0 to 1.1.0")
    func passThrough() throws {
        let v031 = try JSONValue(parsing: Data(Self.bridgeResult031.utf8))
        for version in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
            // What bridge prints at `version`: 0.x results carry "version" in ips, 1.x do not.
            let previous = try CNIResult(decoding: v031, version: "0.3.1").json(version: version)
            let stdin = JSONValue.object(["cniVersion": .string(version), "name": "k8s-pod-network", "type": "istio-cni", "prevResult": previous])
            let (status, output, _) = Self.run(String(decoding: stdin.jsonData, as: UTF8.self), env: Self.environment)
            #expect(status == 0)
            #expect(output == previous, "\(version)")
            #expect(output?["ips"]?.description.contains("\"version\"") == (version < "1.0.0"))
        }
    }

    /// Found by fuzzing (`cni`): a prevResult without its own cniVersion was documented as
    /// read at the configuration's version but refused (the decoding type required the key).
    @Test("a prevResult without its own cniVersion is read at the configuration's, as libcni does")
    func prevResultWithoutVersion() throws {
        for (version, previous) in [
            ("0.2.0", #"{"ip4":{"ip":"10.1.0.2/16","gateway":"10.1.0.1"}}"#),
            ("0.3.1", #"{"ips":[{"version":"4","address":"10.1.0.2/16","interface":0}],"interfaces":[{"name":"eth0"}]}"#),
            ("1.0.0", #"{"ips":[{"address":"10.1.0.2/16"}]}"#),
        ] {
            let (status, output, _) = Self.run(#"{"cniVersion":"\#(version)","name":"n","type":"t","prevResult":\#(previous)}"#)
            #expect(status == 0, "\(version): \(String(describing: output))")
            #expect(output?["cniVersion"] == .string(version))
            #expect(output?.description.contains("10.1.0.2/16") == true, "\(version)")
        }
    }

    @Test("results convert between 0.1.0/0.2.0 (ip4/ip6), 0.3.x/0.4.0 and 1.x both ways")
    func conversions() throws {
        let legacy = try JSONValue(parsing: Data("""
        {"cniVersion":"0.2.0","ip4":{"ip":"10.1.0.5/24","gateway":"10.1.0.1","routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"}]},
         "ip6":{"ip":"fd00::5/64","routes":[{"dst":"::/0"}]},"dns":{"nameservers":["10.96.0.10"]}}
        """.utf8))
        let result = try CNIResult(decoding: legacy, version: "0.2.0")
        #expect(result.ips?.map(\.address) == ["10.1.0.5/24", "fd00::5/64"])
        #expect(result.ips?.first?.gateway == "10.1.0.1")
        #expect(result.routes?.map(\.dst) == ["0.0.0.0/0", "::/0"])
        #expect(result.dns?.nameservers == ["10.96.0.10"])
        let v1 = try result.json(version: "1.0.0")
        #expect(v1["ips"] == .array([
            .object(["address": "10.1.0.5/24", "gateway": "10.1.0.1"]), .object(["address": "fd00::5/64"]),
        ]))
        let v040 = try result.json(version: "0.4.0")
        #expect(v040["ips"]?.description.contains(#""version":"6""#) == true)
        // And back down: 1.x → 0.2.0 is the same legacy object.
        #expect(try CNIResult(decoding: v1, version: "1.0.0").json(version: "0.2.0") == legacy)
        #expect(throws: CNIError.self) { try result.json(version: "2.0.0") }
    }

    @Test("fuzz: random stdin never crashes the skeleton; every failure is an error JSON with a code", arguments: [UInt64(41), 42])
    func fuzz(seed: UInt64) async {
        var generator = SeededGenerator(seed: seed)
        let valid = Array(#"{"cniVersion":"1.0.0","name":"n","type":"t","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]}}"#.utf8)
        for _ in 0..<1500 {
            await Task.yield() // a CPU-bound test on the shared pool: let the others in
            var input = valid
            for _ in 0..<Int(generator.next() % 4 + 1) {
                let index = Int(generator.next() % UInt64(input.count))
                input[index] = UInt8(truncatingIfNeeded: generator.next())
            }
            let outcome = CNISkeleton.run(PassThrough(), environment: Self.environment, stdin: Data(input))
            if outcome.status != 0 {
                let output = try? JSONValue(parsing: outcome.standardOutput)
                #expect(output?["code"] != nil)
            }
        }
    }
}
