import Foundation
import JobStore
import TimeUnits

/// Callbacks per minute by outcome as an inline SVG bar chart, drawn on the server: no chart library, no
/// script, and presentation attributes only (the Content-Security-Policy forbids inline styles; colours
/// come from the stylesheet by class).
enum CallbackRateChart {
    static let outcomes = StoredOutcome.allCases

    /// One stacked bar per bucket from `startMicros`, `bucketCount` buckets of `bucketSeconds`.
    static func svg(_ buckets: [CallbackRateBucket], startMicros: Int64, bucketSeconds: Int, bucketCount: Int, title: String) -> HTML {
        let bucketMicros = Int64(bucketSeconds) * 1_000_000
        var counts = Array(repeating: [StoredOutcome: Int](), count: bucketCount)
        for bucket in buckets {
            let index = Int((bucket.startMicros - startMicros) / bucketMicros)
            guard (0..<bucketCount).contains(index) else { continue }
            counts[index][bucket.outcome, default: 0] += bucket.count
        }
        let perMinute = 60.0 / Double(bucketSeconds)
        let highest = max(counts.map { Double($0.values.reduce(0, +)) * perMinute }.max() ?? 0, 1)
        let (left, right, top, bottom) = (48.0, 995.0, 8.0, 176.0)
        let width = (right - left) / Double(bucketCount)
        var bars: [HTML] = []
        for (index, bucket) in counts.enumerated() {
            var base = bottom
            let start = startMicros + Int64(index) * bucketMicros
            for outcome in outcomes {
                guard let count = bucket[outcome], count > 0 else { continue }
                let rate = Double(count) * perMinute
                let height = max((bottom - top) * rate / highest, 1)
                base -= height
                let label = "\(timeLabel(start)) UTC: \(outcome.rawValue) \(String(format: "%.1f", rate))/min (\(count) callbacks)"
                bars.append(
                    """
                    <rect class="\(outcome.rawValue)" x="\(Int(left + Double(index) * width))" y="\(Int(base))" \
                    width="\(max(Int(width) - 1, 1))" height="\(Int(height.rounded(.up)))"><title>\(label)</title></rect>
                    """)
            }
        }
        let end = startMicros + Int64(bucketCount) * bucketMicros
        let first = startMicros
        return """
            <svg class="chart" viewBox="0 0 1000 200" role="img" aria-label="\(title)" xmlns="http://www.w3.org/2000/svg">\
            <line x1="48" y1="176" x2="995" y2="176"></line><line x1="48" y1="8" x2="995" y2="8"></line>\
            <text x="2" y="18">\(String(format: "%.0f", highest))/min</text><text x="2" y="180">0</text>\
            <text x="48" y="194">\(timeLabel(first))</text><text x="930" y="194">\(timeLabel(end))</text>\
            \(bars)</svg>
            """
    }

    /// `HH:MM` of an instant, UTC, by arithmetic: the chart labels up to 200 bars, and a `Calendar` made per label is not free.
    static func timeLabel(_ micros: Int64) -> String {
        let minuteOfDay = ((micros / 60_000_000) % 1440 + 1440) % 1440
        let (hour, minute) = (minuteOfDay / 60, minuteOfDay % 60)
        return (hour < 10 ? "0" : "") + "\(hour):" + (minute < 10 ? "0" : "") + "\(minute)"
    }
}
