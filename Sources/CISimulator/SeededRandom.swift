/// SplitMix64 (Steele, Lea, Flood 2014): a tiny, fast generator whose whole state is one seed, so that a
/// simulator run can be repeated exactly. Not for secrets.
struct SeededRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64

    init(seed: UInt64) {
        state = seed
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// `true` with probability `p` (0 never, 1 always).
    mutating func chance(_ p: Double) -> Bool {
        // Drawn even when p is 0 or 1, so that changing one probability does not shift later draws.
        let draw = Double(next() >> 11) / Double(UInt64(1) << 53)
        return draw < p
    }

    /// `count` random bytes as lowercase hex.
    mutating func hex(bytes count: Int) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(count * 2)
        var word: UInt64 = 0
        for index in 0..<count {
            if index % 8 == 0 { word = next() }
            let byte = UInt8(truncatingIfNeeded: word >> (UInt64(index % 8) * 8))
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
