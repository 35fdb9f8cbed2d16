import InternetAddress
import MeshTestSupport
import Netlink
import Testing

@Suite("Netlink over libmnl")
struct NetlinkTests {
    @Test("an RTM_GETLINK dump of this namespace lists lo at index 1")
    func dumpLinks() throws {
        let socket = try NetlinkSocket(bus: .route)
        #expect(socket.portID != 0)
        let links = try RouteNetlink.links(on: socket)
        let loopback = try #require(links.first { $0.name == "lo" })
        #expect(loopback.index == 1)
        #expect(loopback.flags & 0x8 != 0, "IFF_LOOPBACK")
        #expect(try RouteNetlink.link(index: 1, on: socket).name == "lo")
        // The socket is reusable: a second request on it gets its own reply.
        #expect(try RouteNetlink.links(on: socket).count == links.count)
    }

    @Test("kernel errors come back typed with their errno")
    func kernelError() throws {
        let socket = try NetlinkSocket(bus: .route)
        #expect {
            _ = try RouteNetlink.link(index: 0x7fff_fff0, on: socket)
        } throws: { error in
            guard let error = error as? NetlinkError else { return false }
            return error.kind == .kernel && error.errno == 19 && error.isNotFound
                && error.description.contains("No such device")
        }
    }

    @Test("built messages parse back: header, family header, flat and nested attributes")
    func roundTrip() throws {
        var request = NetlinkRequest(type: 16, flags: [.ack, .create], familyHeader: [1, 2, 3, 4, 5, 6])
        try request.put(1, u32: 0x539)
        try request.put(2, string: "istio-inpod-probes-v4")
        let nest = try request.beginNest(3, markNested: true)
        try request.put(1, u8: 6)
        try request.put(2, u32BigEndian: 0xA9FE_077F)
        request.endNest(nest)
        try request.putFlag(4)
        let message = try NetlinkMessage(bytes: request.bytes)
        #expect(message.type == 16)
        #expect(message.flags & 0x1 != 0, "NLM_F_REQUEST is always set")
        #expect(Array(try message.familyHeader(size: 6)) == [1, 2, 3, 4, 5, 6])
        let attributes = try message.attributes(afterFamilyHeader: 6)
        #expect(attributes.all.map(\.type) == [1, 2, 3, 4])
        #expect(attributes.u32(1) == 0x539)
        #expect(attributes.string(2) == "istio-inpod-probes-v4")
        #expect(attributes[3]?.isNested == true)
        let nested = try #require(try attributes.nested(3))
        #expect(nested[1]?.payload == [6])
        #expect(nested.u32BigEndian(2) == 0xA9FE_077F)
        #expect(attributes[4]?.payload == [])
    }

    @Test("oversized requests throw instead of overflowing")
    func tooLarge() throws {
        var request = NetlinkRequest(type: 16, flags: [])
        #expect(throws: NetlinkError.self) {
            try request.put(1, bytes: [UInt8](repeating: 0, count: NetlinkRequest.capacity))
        }
        #expect(request.length == 16, "a refused attribute leaves the message unchanged")
    }

    @Test("fuzz: random and mutated bytes never crash the message and attribute parsers", arguments: [UInt64(21), 22])
    func fuzz(seed: UInt64) throws {
        var random = SeededGenerator(seed: seed)
        var request = NetlinkRequest(type: 16, flags: [], familyHeader: [0, 0, 0, 0])
        try request.put(1, string: "eth0")
        let nest = try request.beginNest(2)
        try request.put(3, u32: 7)
        request.endNest(nest)
        let valid = request.bytes
        var rejected = 0
        for iteration in 0..<5000 {
            let input = iteration % 2 == 0 ? random.mutate(valid) : random.bytes(Int.random(in: 0...64, using: &random))
            do {
                let message = try NetlinkMessage(bytes: input)
                let attributes = try message.attributes(afterFamilyHeader: 4)
                for attribute in attributes.all { _ = try? NetlinkAttributes(parsing: attribute.payload) }
            } catch {
                rejected += 1
            }
            do {
                _ = try NetlinkAttributes(parsing: input)
            } catch {
                #expect(error.kind == .malformed)
            }
        }
        #expect(rejected > 0)
    }
}

@Suite("Netlink address and ipset encoding")
struct NetlinkEncodingTests {
    @Test("IPAddress parses and prints IPv4 and IPv6, rejects the rest")
    func addresses() {
        #expect(IPAddress("169.254.7.127")?.bytes == [169, 254, 7, 127])
        #expect(IPAddress("fd16:9254:7127:1337:ffff:ffff:ffff:ffff")?.description == "fd16:9254:7127:1337:ffff:ffff:ffff:ffff")
        #expect(IPAddress("::1")?.isIPv6 == true)
        #expect(IPAddress("[::1]") == nil)
        #expect(IPAddress("10.0.0.1/32") == nil)
        #expect(IPAddress("300.1.1.1") == nil)
        #expect(IPAddress(bytes: [1, 2, 3]) == nil)
    }

    @Test("the name limits of ipset are enforced before anything is sent")
    func ipsetNameLimits() throws {
        let socket = try NetlinkSocket(bus: .route)
        #expect {
            try IPSet.add(.init(address: IPAddress("10.0.0.1")!), to: String(repeating: "x", count: 32), on: socket)
        } throws: { error in
            (error as? NetlinkError)?.kind == .malformed
        }
        #expect { try IPSet.destroy(named: "", on: socket) } throws: { error in
            (error as? NetlinkError)?.kind == .malformed
        }
    }
}
