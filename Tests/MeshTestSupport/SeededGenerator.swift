/// A deterministic random number generator (SplitMix64) for fuzz-style tests, so a
/// failure reproduces from the seed printed with it.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64

    /// Starts from `seed`.
    public init(seed: UInt64) { self.state = seed }

    public mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// `count` random bytes.
    public mutating func bytes(_ count: Int) -> [UInt8] {
        (0..<count).map { _ in UInt8.random(in: 0...255, using: &self) }
    }

    /// `input` with 1–4 random mutations: flipped bits, changed bytes, truncation, insertion or deletion.
    public mutating func mutate(_ input: [UInt8]) -> [UInt8] {
        var output = input
        for _ in 0..<Int.random(in: 1...4, using: &self) where !output.isEmpty {
            let index = Int.random(in: 0..<output.count, using: &self)
            switch Int.random(in: 0..<5, using: &self) {
            case 0: output[index] ^= UInt8(1 << Int.random(in: 0..<8, using: &self))
            case 1: output[index] = UInt8.random(in: 0...255, using: &self)
            case 2: output.removeSubrange(index...)
            case 3: output.insert(UInt8.random(in: 0...255, using: &self), at: index)
            default: output.remove(at: index)
            }
        }
        return output
    }
}
