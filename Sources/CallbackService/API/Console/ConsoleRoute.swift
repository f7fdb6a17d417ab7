import HTTPWire

/// The console's pages, matched from what follows `/console` in the path. Pure, so the table is
/// unit-tested without sockets. The URLs are fixed: operators link to them.
enum ConsoleRoute: Sendable, Hashable {
    case overview
    case login
    case logout
    case jobs
    case job(jobID: String)
    /// POST: ask CI about the job now (the reconciler's single-job path).
    case describe(jobID: String)
    /// POST: send one of the job's webhook deliveries again (the API's delivery retry).
    case redeliver(jobID: String)
    case rejected
    case callback(callbackID: Int64)
    /// The callback's body byte for byte, as a download.
    case rawBody(callbackID: Int64)
    case search
    case asset(name: String)

    enum Match: Sendable, Hashable {
        case route(ConsoleRoute)
        case methodNotAllowed(allowed: [HTTPMethod])
        case notFound
    }

    static let assetNames: Set<String> = ["console.css", "console.js"]

    static func match(method: HTTPMethod, path: [String]) -> Match {
        guard let (route, allowed) = resolve(path) else { return .notFound }
        return allowed.contains(method) ? .route(route) : .methodNotAllowed(allowed: allowed)
    }

    private static let read: [HTTPMethod] = [.get, .head]

    private static func resolve(_ path: [String]) -> (ConsoleRoute, [HTTPMethod])? {
        switch path.count {
        case 0: return (.overview, read)
        case 1:
            switch path[0] {
            case "login": return (.login, [.get, .head, .post])
            case "logout": return (.logout, [.post])
            case "jobs": return (.jobs, read)
            case "rejected": return (.rejected, read)
            case "search": return (.search, read)
            default: return nil
            }
        case 2:
            switch path[0] {
            case "jobs": return (.job(jobID: path[1]), read)
            case "callbacks":
                guard let id = Int64(path[1]), id > 0 else { return nil }
                return (.callback(callbackID: id), read)
            case "assets" where assetNames.contains(path[1]): return (.asset(name: path[1]), read)
            default: return nil
            }
        case 3:
            if path[0] == "jobs", path[2] == "describe" { return (.describe(jobID: path[1]), [.post]) }
            if path[0] == "jobs", path[2] == "redeliver" { return (.redeliver(jobID: path[1]), [.post]) }
            if path[0] == "callbacks", path[2] == "raw", let id = Int64(path[1]), id > 0 { return (.rawBody(callbackID: id), read) }
            return nil
        default:
            return nil
        }
    }

    /// Pages anyone may load without a session: the login form and the stylesheet and script it uses.
    var isPublic: Bool {
        switch self {
        case .login, .asset: true
        default: false
        }
    }
}
