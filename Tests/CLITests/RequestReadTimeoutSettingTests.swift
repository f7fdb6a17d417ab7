import ArgumentParser
import Testing

@testable import ci_callbackd

/// `--request-read-timeout` / `REQUEST_READ_TIMEOUT` and their deprecated names `--header-timeout` /
/// `HEADER_TIMEOUT`: pure, no database.
@Suite("Request read timeout setting")
struct RequestReadTimeoutSettingTests {
    private let fallback = Duration.seconds(10)

    @Test func requestReadTimeout_NewAndDeprecatedNames_BothWork() throws {
        let none = SettingResolver(environment: [:])
        #expect(try none.requestReadTimeout(flag: nil, deprecatedFlag: nil, default: fallback) == fallback)
        #expect(try none.requestReadTimeout(flag: "3s", deprecatedFlag: nil, default: fallback) == .seconds(3))
        #expect(try none.requestReadTimeout(flag: nil, deprecatedFlag: "4s", default: fallback) == .seconds(4))
        let newEnvironment = SettingResolver(environment: ["REQUEST_READ_TIMEOUT": "5s"])
        #expect(try newEnvironment.requestReadTimeout(flag: nil, deprecatedFlag: nil, default: fallback) == .seconds(5))
        let oldEnvironment = SettingResolver(environment: ["HEADER_TIMEOUT": "6s"])
        #expect(try oldEnvironment.requestReadTimeout(flag: nil, deprecatedFlag: nil, default: fallback) == .seconds(6))
    }

    @Test func requestReadTimeout_FlagBeatsVariable_WhicheverNameEachUses() throws {
        let oldEnvironment = SettingResolver(environment: ["HEADER_TIMEOUT": "6s"])
        #expect(try oldEnvironment.requestReadTimeout(flag: "3s", deprecatedFlag: nil, default: fallback) == .seconds(3))
        let newEnvironment = SettingResolver(environment: ["REQUEST_READ_TIMEOUT": "5s"])
        #expect(try newEnvironment.requestReadTimeout(flag: nil, deprecatedFlag: "4s", default: fallback) == .seconds(4))
    }

    @Test func requestReadTimeout_BothNamesAtOneLevel_IsAnError() {
        let none = SettingResolver(environment: [:])
        #expect(throws: ValidationError.self) { try none.requestReadTimeout(flag: "3s", deprecatedFlag: "3s", default: fallback) }
        let both = SettingResolver(environment: ["REQUEST_READ_TIMEOUT": "5s", "HEADER_TIMEOUT": "6s"])
        #expect(throws: ValidationError.self) { try both.requestReadTimeout(flag: nil, deprecatedFlag: nil, default: fallback) }
    }

    @Test func requestReadTimeout_BadDeprecatedValue_NamesTheNameGiven() {
        let oldEnvironment = SettingResolver(environment: ["HEADER_TIMEOUT": "soon"])
        #expect {
            try oldEnvironment.requestReadTimeout(flag: nil, deprecatedFlag: nil, default: fallback)
        } throws: { error in
            "\(error)".contains("HEADER_TIMEOUT")
        }
    }
}
