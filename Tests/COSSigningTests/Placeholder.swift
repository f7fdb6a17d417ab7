import Testing

@Test func placeholder_COSSigningTests() {}
