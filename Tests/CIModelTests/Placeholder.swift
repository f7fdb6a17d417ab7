import Testing

@Test func placeholder_CIModelTests() {}
