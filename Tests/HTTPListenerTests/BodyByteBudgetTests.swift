import HTTPWire
import Testing

@testable import HTTPListener

/// The request-body budget's accounting, without sockets: reservations grow as bodies are announced,
/// are refused past the limit, and come back whole.

@Test func bodyBudget_GrowsAHolderUpToTheLimit() {
    var budget = BodyByteBudget(limit: 100)
    var first = 0
    #expect(budget.grow(&first, to: 60))
    #expect(first == 60 && budget.reserved == 60)
    var second = 0
    #expect(budget.grow(&second, to: 40))
    #expect(budget.reserved == 100)
}

@Test func bodyBudget_RefusesGrowthPastTheLimitAndChangesNothing() {
    var budget = BodyByteBudget(limit: 100)
    var first = 0
    #expect(budget.grow(&first, to: 60))
    var second = 0
    #expect(!budget.grow(&second, to: 41))
    #expect(second == 0 && budget.reserved == 60)
    // A smaller request still fits.
    #expect(budget.grow(&second, to: 40))
}

@Test func bodyBudget_GrowthChargesOnlyTheDifference() {
    var budget = BodyByteBudget(limit: 100)
    var chunked = 0
    #expect(budget.grow(&chunked, to: 30))
    #expect(budget.grow(&chunked, to: 80))
    #expect(chunked == 80 && budget.reserved == 80)
    // Asking for less than is held keeps what is held.
    #expect(budget.grow(&chunked, to: 10))
    #expect(chunked == 80 && budget.reserved == 80)
    #expect(!budget.grow(&chunked, to: 101))
    #expect(chunked == 80)
}

@Test func bodyBudget_ReleaseGivesEverythingBackOnce() {
    var budget = BodyByteBudget(limit: 100)
    var first = 0
    var second = 0
    #expect(budget.grow(&first, to: 70))
    #expect(budget.grow(&second, to: 30))
    budget.release(&first)
    #expect(first == 0 && budget.reserved == 30)
    budget.release(&first)
    #expect(budget.reserved == 30)
    budget.release(&second)
    #expect(budget.reserved == 0)
    var third = 0
    #expect(budget.grow(&third, to: 100))
}

@Test func bodyBudget_ZeroBytesAlwaysFit() {
    var budget = BodyByteBudget(limit: 0)
    var holder = 0
    #expect(budget.grow(&holder, to: 0))
    #expect(!budget.grow(&holder, to: 1))
}

@Test func refusalReason_ParserStatusesMapToFixedReasons() {
    #expect(HTTPRefusal.Reason(parserRejection: .payloadTooLarge) == .bodyTooLarge)
    #expect(HTTPRefusal.Reason(parserRejection: .uriTooLong) == .uriTooLong)
    #expect(HTTPRefusal.Reason(parserRejection: .requestHeaderFieldsTooLarge) == .headersTooLarge)
    #expect(HTTPRefusal.Reason(parserRejection: .expectationFailed) == .expectationFailed)
    #expect(HTTPRefusal.Reason(parserRejection: .notImplemented) == .unsupportedTransferCoding)
    #expect(HTTPRefusal.Reason(parserRejection: .httpVersionNotSupported) == .versionNotSupported)
    #expect(HTTPRefusal.Reason(parserRejection: .badRequest) == .malformed)
    #expect(HTTPRefusal.Reason.allCases.count == 15)
}
