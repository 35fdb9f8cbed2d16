/// A SPIFFE trust domain, such as `cluster.local`.
///
/// The SPIFFE ID specification (§2.1) allows only lowercase letters, digits, dots,
/// dashes and underscores in a trust domain; Istio's default is `cluster.local`.
public struct TrustDomain: Hashable, Sendable, CustomStringConvertible, Codable {
    /// The trust domain name.
    public let name: String

    /// The longest trust domain accepted (SPIFFE ID spec §2.1: 255 bytes).
    public static let maximumLength = 255

    /// Istio's default trust domain.
    public static let clusterLocal = TrustDomain(uncheckedName: "cluster.local")

    /// Validates and wraps `name`.
    public init(_ name: String) throws(SPIFFEIDError) {
        try TrustDomain.validate(name, whole: name)
        self.name = name
    }

    private init(uncheckedName: String) { self.name = uncheckedName }

    public var description: String { self.name }

    static func validate(_ name: String, whole: String) throws(SPIFFEIDError) {
        if name.isEmpty { throw SPIFFEIDError(.emptyTrustDomain, in: whole) }
        if name.utf8.count > maximumLength { throw SPIFFEIDError(.oversize, in: whole) }
        for byte in name.utf8 where !isTrustDomainByte(byte) {
            throw SPIFFEIDError(.invalidCharacter(Character(Unicode.Scalar(byte))), in: whole)
        }
    }

    private static func isTrustDomainByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "."), UInt8(ascii: "-"), UInt8(ascii: "_"):
            return true
        default:
            return false
        }
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        self = try TrustDomain(container.decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(self.name)
    }
}

/// A workload identity in Istio's SPIFFE form: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
///
/// Parsing is strict: the scheme must be exactly `spiffe://`, the path must have
/// exactly the four segments `ns`, namespace, `sa`, service account, and every
/// segment may contain only the characters the SPIFFE ID specification (§2.2)
/// allows in a path segment (`[A-Za-z0-9._-]`, not `.` or `..`). Anything else is a
/// ``SPIFFEIDError`` that says what is wrong.
///
/// Istio's authorization policies and access logs use the *principal* form, the
/// same string without the `spiffe://` prefix (see ``principal`` and ``init(principal:)``).
public struct SPIFFEID: Hashable, Sendable, Comparable, CustomStringConvertible, LosslessStringConvertible, Codable {
    /// The trust domain.
    public let trustDomain: TrustDomain
    /// The Kubernetes namespace.
    public let namespace: String
    /// The Kubernetes service account.
    public let serviceAccount: String

    /// The scheme prefix.
    public static let scheme = "spiffe://"
    /// The longest SPIFFE ID accepted (SPIFFE ID spec §2.3: 2048 bytes).
    public static let maximumLength = 2048

    /// Creates an identity from its parts, validating each.
    public init(trustDomain: TrustDomain, namespace: String, serviceAccount: String) throws(SPIFFEIDError) {
        let whole = "\(SPIFFEID.scheme)\(trustDomain.name)/ns/\(namespace)/sa/\(serviceAccount)"
        try SPIFFEID.validateSegment(namespace, whole: whole)
        try SPIFFEID.validateSegment(serviceAccount, whole: whole)
        if whole.utf8.count > SPIFFEID.maximumLength { throw SPIFFEIDError(.oversize, in: whole) }
        self.trustDomain = trustDomain
        self.namespace = namespace
        self.serviceAccount = serviceAccount
    }

    /// Parses `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
    public init(parsing uri: String) throws(SPIFFEIDError) {
        if uri.utf8.count > SPIFFEID.maximumLength { throw SPIFFEIDError(.oversize, in: uri) }
        guard uri.hasPrefix(SPIFFEID.scheme) else { throw SPIFFEIDError(.wrongScheme, in: uri) }
        try self.init(principalOf: String(uri.dropFirst(SPIFFEID.scheme.count)), whole: uri)
    }

    /// Parses Istio's principal form `<trust-domain>/ns/<namespace>/sa/<service-account>`.
    public init(principal: String) throws(SPIFFEIDError) {
        if principal.utf8.count > SPIFFEID.maximumLength { throw SPIFFEIDError(.oversize, in: principal) }
        if principal.hasPrefix(SPIFFEID.scheme) { throw SPIFFEIDError(.unexpectedScheme, in: principal) }
        try self.init(principalOf: principal, whole: principal)
    }

    /// Failable form of ``init(parsing:)`` for `LosslessStringConvertible`.
    public init?(_ description: String) {
        guard let parsed = try? SPIFFEID(parsing: description) else { return nil }
        self = parsed
    }

    private init(principalOf rest: String, whole: String) throws(SPIFFEIDError) {
        let segments = rest.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard let domain = segments.first, !domain.isEmpty else { throw SPIFFEIDError(.emptyTrustDomain, in: whole) }
        try TrustDomain.validate(domain, whole: whole)
        if let empty = segments.dropFirst().firstIndex(where: \.isEmpty) {
            throw SPIFFEIDError(.emptySegment(position: empty), in: whole)
        }
        guard segments.count >= 5 else { throw SPIFFEIDError(.missingSegments, in: whole) }
        guard segments.count == 5 else { throw SPIFFEIDError(.extraSegments, in: whole) }
        guard segments[1] == "ns" else { throw SPIFFEIDError(.expectedKeyword("ns", found: segments[1]), in: whole) }
        guard segments[3] == "sa" else { throw SPIFFEIDError(.expectedKeyword("sa", found: segments[3]), in: whole) }
        try SPIFFEID.validateSegment(segments[2], whole: whole)
        try SPIFFEID.validateSegment(segments[4], whole: whole)
        self.trustDomain = try TrustDomain(domain)
        self.namespace = segments[2]
        self.serviceAccount = segments[4]
    }

    private static func validateSegment(_ segment: String, whole: String) throws(SPIFFEIDError) {
        if segment.isEmpty { throw SPIFFEIDError(.emptySegment(position: nil), in: whole) }
        if segment == "." || segment == ".." { throw SPIFFEIDError(.dotSegment, in: whole) }
        for byte in segment.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "-"), UInt8(ascii: "_"):
                continue
            default:
                throw SPIFFEIDError(.invalidCharacter(Character(Unicode.Scalar(byte))), in: whole)
            }
        }
    }

    /// The URI form, `spiffe://td/ns/x/sa/y`.
    public var uri: String { SPIFFEID.scheme + self.principal }

    /// Istio's principal form, `td/ns/x/sa/y` (used by `AuthorizationPolicy` and access logs).
    public var principal: String { "\(self.trustDomain.name)/ns/\(self.namespace)/sa/\(self.serviceAccount)" }

    public var description: String { self.uri }

    public static func < (lhs: SPIFFEID, rhs: SPIFFEID) -> Bool { lhs.uri < rhs.uri }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        self = try SPIFFEID(parsing: container.decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(self.uri)
    }
}

/// Why a string is not a valid SPIFFE ID or trust domain.
public struct SPIFFEIDError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The specific defect.
    public enum Reason: Hashable, Sendable {
        /// The string does not start with `spiffe://`.
        case wrongScheme
        /// A principal (no scheme expected) started with `spiffe://`.
        case unexpectedScheme
        /// Nothing between `spiffe://` and the first `/`.
        case emptyTrustDomain
        /// A `//` or trailing `/`; `position` is the segment index when known.
        case emptySegment(position: Int?)
        /// Fewer than `/ns/<ns>/sa/<sa>`.
        case missingSegments
        /// More path segments than `/ns/<ns>/sa/<sa>`.
        case extraSegments
        /// A fixed keyword (`ns` or `sa`) was expected.
        case expectedKeyword(String, found: String)
        /// A character the SPIFFE spec does not allow.
        case invalidCharacter(Character)
        /// A `.` or `..` segment.
        case dotSegment
        /// Longer than the spec allows.
        case oversize
    }

    /// The defect.
    public let reason: Reason
    /// The offending input (truncated to 128 characters).
    public let input: String

    init(_ reason: Reason, in input: String) {
        self.reason = reason
        self.input = input.count > 128 ? String(input.prefix(128)) + "…" : input
    }

    public var description: String {
        let what: String
        switch self.reason {
        case .wrongScheme: what = "must start with \"spiffe://\""
        case .unexpectedScheme: what = "a principal has no \"spiffe://\" prefix"
        case .emptyTrustDomain: what = "the trust domain is empty"
        case .emptySegment: what = "a path segment is empty"
        case .missingSegments: what = "the path must be /ns/<namespace>/sa/<service-account>"
        case .extraSegments: what = "the path has segments after /ns/<namespace>/sa/<service-account>"
        case .expectedKeyword(let keyword, let found): what = "expected \"\(keyword)\" but found \"\(found)\""
        case .invalidCharacter(let character): what = "character \(character.debugDescription) is not allowed"
        case .dotSegment: what = "\".\" and \"..\" segments are not allowed"
        case .oversize: what = "longer than the SPIFFE limit"
        }
        return "invalid SPIFFE ID \(self.input.debugDescription): \(what)"
    }
}
