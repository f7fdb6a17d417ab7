import Foundation
import TestSupport
import Testing
import Yams

/// Invariants of the operator-facing files under `deploy/`: that they parse, that the Dockerfile,
/// compose file, Kubernetes manifests and systemd unit agree with the service (port, probe paths,
/// shutdown grace, secrets), and that the dashboard and alerts only use metrics the service exports.
///
/// Docker itself cannot run here, so these tests read the files; the systemd unit is checked by the real
/// `systemd-analyze verify`.
@Suite struct DeployFilesTests {
    // MARK: Every file parses

    @Test func deployFiles_EveryYAMLAndJSONFileParses() throws {
        let files = try DeployTree.files()
        let yamlFiles = files.filter { $0.hasSuffix(".yml") || $0.hasSuffix(".yaml") }
        let jsonFiles = files.filter { $0.hasSuffix(".json") }
        // Guards against a vacuous pass when the tree is not where the test thinks it is.
        #expect(yamlFiles.contains("kubernetes/deployment.yaml"))
        #expect(yamlFiles.contains("docker-compose.yml"))
        #expect(yamlFiles.contains("prometheus/alerts.yml"))
        #expect(jsonFiles.contains("grafana/ci-callbackd-dashboard.json"))

        for file in yamlFiles {
            #expect(throws: Never.self, "\(file) is not valid YAML") {
                let documents = try YAMLDocuments.load(DeployTree.text(file))
                #expect(!documents.isEmpty, "\(file) holds no YAML document")
            }
        }
        for file in jsonFiles {
            #expect(throws: Never.self, "\(file) is not valid JSON") {
                _ = try JSONSerialization.jsonObject(with: Data(DeployTree.text(file).utf8))
            }
        }
    }

    @Test func yamlLoader_RejectsBrokenLaterDocumentAndDuplicateKeys() throws {
        let valid = try YAMLDocuments.load("a: 1\n---\nb: [1, 2]\n")
        #expect(valid.count == 2)
        #expect(throws: (any Error).self) { try YAMLDocuments.load("a: 1\n---\nb: [1, 2\n") }
        #expect(throws: (any Error).self) { try YAMLDocuments.load("a: 1\nb:\n  c: 1\n  c: 2\n") }
    }

    // MARK: Kubernetes

    @Test func kubernetes_ProbesUseHealthzAndReadyzOnTheServicePort() throws {
        let manifests = try KubernetesManifests.load()
        let container = try manifests.mainContainer()
        let defaultPort = try ReadmeConfiguration.defaultValue(environment: "PORT")
        #expect(defaultPort == "8080")

        let containerPort = try #require(container["ports"]?.sequence?.first?["containerPort"]?.int)
        #expect(containerPort == 8080)
        #expect(String(containerPort) == defaultPort)
        #expect(manifests.configMap["data"]?["PORT"]?.string == defaultPort)

        let probes = ["startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"]
        for (probe, path) in probes {
            let httpGet = try #require(container[probe]?["httpGet"], "\(probe) has no httpGet")
            #expect(httpGet["path"]?.string == path, "\(probe) must GET \(path)")
            #expect(try manifests.resolvePort(httpGet["port"], in: container) == containerPort, "\(probe) port")
        }

        let servicePort = try #require(manifests.service["spec"]?["ports"]?.sequence?.first)
        #expect(servicePort["port"]?.int == 80)
        #expect(try manifests.resolvePort(servicePort["targetPort"], in: container) == containerPort)

        let annotations = manifests.deployment["spec"]?["template"]?["metadata"]?["annotations"]
        #expect(annotations?["prometheus.io/scrape"]?.string == "true")
        #expect(annotations?["prometheus.io/port"]?.string == String(containerPort))
        #expect(annotations?["prometheus.io/path"]?.string == "/metrics")
    }

    @Test func kubernetes_DeploymentRunsTwoNonRootReplicasWithReadOnlyRoot() throws {
        let manifests = try KubernetesManifests.load()
        let deployment = manifests.deployment
        let podSpec = try #require(deployment["spec"]?["template"]?["spec"])
        let container = try manifests.mainContainer()
        let security = try #require(container["securityContext"])

        #expect(deployment["spec"]?["replicas"]?.int == 2)
        let runAsNonRoot = security["runAsNonRoot"]?.bool ?? podSpec["securityContext"]?["runAsNonRoot"]?.bool
        #expect(runAsNonRoot == true)
        #expect(security["readOnlyRootFilesystem"]?.bool == true)
        #expect(security["allowPrivilegeEscalation"]?.bool == false)
        #expect(security["capabilities"]?["drop"]?.sequence?.compactMap(\.string) == ["ALL"])
        let seccomp = security["seccompProfile"]?["type"]?.string ?? podSpec["securityContext"]?["seccompProfile"]?["type"]?.string
        #expect(seccomp == "RuntimeDefault")
        // A numeric user, or the kubelet cannot check runAsNonRoot against the image's USER name.
        let user = podSpec["securityContext"]?["runAsUser"]?.int ?? security["runAsUser"]?.int
        #expect((user ?? 0) > 0)

        for kind in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                #expect(container["resources"]?[kind]?[resource]?.string != nil, "resources.\(kind).\(resource) is missing")
            }
        }
    }

    @Test func kubernetes_TerminationGraceOutlastsPreStopAndShutdownGrace() throws {
        let manifests = try KubernetesManifests.load()
        let podSpec = try #require(manifests.deployment["spec"]?["template"]?["spec"])
        let container = try manifests.mainContainer()
        let grace = try #require(podSpec["terminationGracePeriodSeconds"]?.int)
        let shutdownGrace = try #require(
            manifests.configMap["data"]?["SHUTDOWN_GRACE"]?.string.flatMap(DurationText.seconds),
            "the ConfigMap must set SHUTDOWN_GRACE as a duration"
        )
        var preStopSeconds = 0.0
        if let command = container["lifecycle"]?["preStop"]?["exec"]?["command"]?.sequence?.compactMap(\.string) {
            #expect(command.count == 2 && command[0] == "sleep", "preStop is expected to be a plain sleep")
            preStopSeconds = try #require(command.last.flatMap(Double.init))
        }
        #expect(Double(grace) > preStopSeconds + shutdownGrace)
    }

    @Test func kubernetes_DisruptionBudgetAndServiceSelectDeploymentPods() throws {
        let manifests = try KubernetesManifests.load()
        let podLabels = try #require(manifests.deployment["spec"]?["template"]?["metadata"]?["labels"]).stringMapping()
        let deploymentSelector = try #require(manifests.deployment["spec"]?["selector"]?["matchLabels"]).stringMapping()
        let pdbSelector = try #require(manifests.pdb["spec"]?["selector"]?["matchLabels"]).stringMapping()
        let serviceSelector = try #require(manifests.service["spec"]?["selector"]).stringMapping()

        for (name, selector) in [("Deployment", deploymentSelector), ("PodDisruptionBudget", pdbSelector), ("Service", serviceSelector)] {
            #expect(!selector.isEmpty, "\(name) selects nothing")
            #expect(selector.allSatisfy { podLabels[$0.key] == $0.value }, "\(name) selector \(selector) does not match pod labels \(podLabels)")
        }
        #expect(manifests.pdb["apiVersion"]?.string == "policy/v1")
        #expect(manifests.pdb["spec"]?["minAvailable"]?.int == 1)
    }

    @Test func kubernetes_AutoscalerTargetsTheDeploymentOnCPU() throws {
        let manifests = try KubernetesManifests.load()
        let hpa = manifests.hpa
        #expect(hpa["apiVersion"]?.string == "autoscaling/v2")
        let target = try #require(hpa["spec"]?["scaleTargetRef"])
        #expect(target["apiVersion"]?.string == manifests.deployment["apiVersion"]?.string)
        #expect(target["kind"]?.string == "Deployment")
        #expect(target["name"]?.string == manifests.deployment["metadata"]?["name"]?.string)

        let minReplicas = try #require(hpa["spec"]?["minReplicas"]?.int)
        let maxReplicas = try #require(hpa["spec"]?["maxReplicas"]?.int)
        #expect(minReplicas >= 2 && maxReplicas >= minReplicas)
        let metrics = hpa["spec"]?["metrics"]?.elements ?? []
        #expect(metrics.contains { $0["resource"]?["name"]?.string == "cpu" })
        // Utilization is relative to the request: without one the HPA cannot compute it.
        #expect(try manifests.mainContainer()["resources"]?["requests"]?["cpu"] != nil)
    }

    @Test func kubernetes_SecretExampleHoldsEveryKeyTheDeploymentReads() throws {
        let manifests = try KubernetesManifests.load()
        let container = try manifests.mainContainer()
        let secretName = try #require(manifests.secret["metadata"]?["name"]?.string)
        let secretData = try #require(manifests.secret["stringData"]?.mapping)
        let secretKeys = Set(secretData.keys.compactMap(\.string))

        var referenced: Set<String> = []
        for variable in container["env"]?.elements ?? [] {
            guard let ref = variable["valueFrom"]?["secretKeyRef"] else { continue }
            #expect(ref["name"]?.string == secretName)
            if let key = ref["key"]?.string { referenced.insert(key) }
        }
        #expect(referenced.isSuperset(of: ["DATABASE_URL", "CALLBACK_TOKENS", "API_TOKENS", "CI_SECRET_KEY"]))
        #expect(referenced.isSubset(of: secretKeys), "keys missing from the Secret example: \(referenced.subtracting(secretKeys).sorted())")

        let configMapRefs = container["envFrom"]?.sequence?.compactMap { $0["configMapRef"]?["name"]?.string } ?? []
        #expect(configMapRefs == [manifests.configMap["metadata"]?["name"]?.string].compactMap { $0 })
        let configKeys = Set(manifests.configMap["data"]?.mapping?.keys.compactMap(\.string) ?? [])
        #expect(configKeys.isDisjoint(with: ServiceSettings.secrets), "secrets in the ConfigMap: \(configKeys.intersection(ServiceSettings.secrets).sorted())")
        #expect(configKeys.union(referenced) == ServiceSettings.all, "settings not wired: \(ServiceSettings.all.subtracting(configKeys.union(referenced)).sorted())")

        // Clearly placeholders, never something that could pass for a real credential.
        for (key, value) in secretData {
            let text = value.string ?? ""
            #expect(text.isEmpty || text.contains("REPLACE_ME"), "\(key.string ?? "?") is not a placeholder")
        }
    }

    @Test func kubernetes_ConfigMapAndSecretValuesAreYAMLStrings() throws {
        // Kubernetes rejects `PORT: 8080` or `AUTO_MIGRATE: true` in data: every value must be a string.
        let manifests = try KubernetesManifests.load()
        for (node, field) in [(manifests.configMap, "data"), (manifests.secret, "stringData")] {
            let mapping = try #require(node[field]?.mapping)
            for (key, value) in mapping {
                #expect(value.tag == Tag(.str), "\(field).\(key.string ?? "?") must be quoted: it parses as \(value.tag)")
            }
        }
    }

    @Test func kubernetes_KustomizationListsEveryManifestButTheExamples() throws {
        let kustomization = try #require(YAMLDocuments.load(DeployTree.text("kubernetes/kustomization.yaml")).first)
        let listed = Set(kustomization["resources"]?.sequence?.compactMap(\.string) ?? [])
        let present = Set(
            try DeployTree.files()
                .filter { $0.hasPrefix("kubernetes/") && $0.hasSuffix(".yaml") && $0 != "kubernetes/kustomization.yaml" }
                .map { String($0.dropFirst("kubernetes/".count)) }
        )
        let examples = present.filter { $0.hasSuffix(".example.yaml") }
        #expect(listed == present.subtracting(examples), "listed \(listed.sorted()), present \(present.sorted())")
        #expect(examples.contains("secret.example.yaml"))
        #expect(listed.isSuperset(of: ["deployment.yaml", "service.yaml", "configmap.yaml", "pdb.yaml", "hpa.yaml"]))
    }

    // MARK: Docker

    @Test func docker_RuntimeStageIsNonRootWithHealthcheckStopSignalAndPort() throws {
        let dockerfile = try Dockerfile(DeployTree.text("Dockerfile"))
        let stages = dockerfile.stages
        #expect(stages.count >= 2, "expected a multi-stage build")
        let builder = try #require(stages.first)
        let runtime = try #require(stages.last)
        let builderImage = dockerfile.resolve(builder.first { $0.keyword == "FROM" }?.arguments ?? "")
        #expect(builderImage.hasPrefix("swift:6.3-bookworm"), "builder stage is FROM \(builderImage)")

        let user = try #require(runtime.last { $0.keyword == "USER" }?.arguments, "no USER in the runtime stage")
        let account = user.split(separator: ":").first.map(String.init) ?? ""
        #expect(!["", "root", "0"].contains(account), "runtime USER is \(user)")

        let healthcheck = try #require(runtime.first { $0.keyword == "HEALTHCHECK" }?.arguments)
        #expect(healthcheck.contains("/healthz"))
        let installs = runtime.filter { $0.keyword == "RUN" && $0.arguments.contains("apt-get install") }.map(\.arguments).joined(separator: " ")
        let probeTool = try #require(["curl", "wget"].first { healthcheck.contains($0) }, "HEALTHCHECK uses neither curl nor wget")
        #expect(installs.split(separator: " ").contains(Substring(probeTool)), "\(probeTool) is not installed in the runtime stage")
        #expect(installs.contains("libpq5"))

        #expect(runtime.contains { $0.keyword == "STOPSIGNAL" && $0.arguments == "SIGTERM" })
        #expect(runtime.contains { $0.keyword == "EXPOSE" && $0.arguments.split(separator: " ").contains("8080") })
        #expect(runtime.contains { $0.keyword == "ENTRYPOINT" && $0.arguments.contains("/usr/local/bin/ci-callbackd") })
        // What the build compiles in (migrations, OpenAPI document) and the plugin that embeds it are in the context.
        for input in ["Plugins", "migrations", "openapi.yaml"] {
            #expect(builder.contains { $0.keyword == "COPY" && $0.arguments.hasPrefix(input) }, "the build stage does not COPY \(input)")
        }
        #expect(runtime.contains { $0.keyword == "COPY" && $0.arguments.hasPrefix("--from=build") })
        #expect(builder.contains { $0.keyword == "RUN" && $0.arguments.contains("--product ci-callbackd") && $0.arguments.contains("-c release") })
    }

    /// The binary is the whole service: no deployment installs migration files or points MIGRATIONS_DIR
    /// at a folder (the override stays available, empty by default).
    @Test func deployFiles_ShipNoMigrationFiles() throws {
        let runtime = try #require(try Dockerfile(DeployTree.text("Dockerfile")).stages.last)
        #expect(!runtime.contains { $0.arguments.contains("migrations") || $0.arguments.contains("MIGRATIONS_DIR") })
        for file in try DeployTree.files() {
            let text = try DeployTree.text(file)
            #expect(!text.contains("share/ci-callbackd"), "deploy/\(file) installs or names a folder of migrations")
            #expect(!text.contains("*.sql"), "deploy/\(file) installs migration files")
            // `MIGRATIONS_DIR=` (env files) or `MIGRATIONS_DIR: ""` (YAML): named, so the override is findable, but empty.
            for line in text.split(separator: "\n") where line.contains("MIGRATIONS_DIR") && !line.trimmingCharacters(in: .whitespaces).hasPrefix("#") {
                let value = line.range(of: "MIGRATIONS_DIR").map { line[$0.upperBound...].drop { $0 == "=" || $0 == ":" } } ?? ""
                #expect(value.trimmingCharacters(in: CharacterSet(charactersIn: " \"'")).isEmpty, "deploy/\(file) sets \(line)")
            }
        }
    }

    @Test func dockerfileParser_JoinsContinuationsAndSkipsComments() throws {
        let parsed = try Dockerfile("ARG IMG=a:1\nFROM ${IMG} AS x\n# comment\nRUN one \\\n    # inner comment\n    two\nFROM b\nUSER 1:1\n")
        #expect(parsed.stages.count == 2)
        #expect(parsed.stages[0].last?.arguments == "one two")
        #expect(parsed.resolve(parsed.stages[0][0].arguments) == "a:1 AS x")
        #expect(parsed.stages[1].last?.keyword == "USER")
    }

    @Test func compose_AppListensOn8080AndWaitsForHealthyDatabase() throws {
        let compose = try #require(YAMLDocuments.load(DeployTree.text("docker-compose.yml")).first)
        let app = try #require(compose["services"]?["app"])
        let db = try #require(compose["services"]?["db"])

        let ports = app["ports"]?.sequence?.compactMap(\.string) ?? []
        #expect(ports.contains { $0.split(separator: ":").last == "8080" }, "app ports \(ports) do not reach container port 8080")
        #expect(app["depends_on"]?["db"]?["condition"]?.string == "service_healthy")

        #expect(db["image"]?.string?.hasPrefix("postgres:15") == true)
        let healthcheck = db["healthcheck"]?["test"]?.sequence?.compactMap(\.string).joined(separator: " ") ?? ""
        #expect(healthcheck.contains("pg_isready"))
        let volume = try #require(db["volumes"]?.sequence?.first?.string?.split(separator: ":").first.map(String.init))
        #expect(compose["volumes"]?.mapping?.keys.compactMap(\.string).contains(volume) == true, "db volume \(volume) is not a named volume")

        let environment = try #require(app["environment"])
        #expect(environment["DATABASE_URL"]?.string?.contains("@db:5432/") == true)
        for secret in ["CALLBACK_TOKENS", "API_TOKENS", "CI_SECRET_KEY"] {
            // From the env file (${...}), never written into the compose file.
            #expect(environment[secret]?.string?.hasPrefix("${") == true, "\(secret) must come from deploy/.env")
        }
        let stopGrace = try #require(app["stop_grace_period"]?.string.flatMap(DurationText.seconds))
        let shutdownGrace = try #require(environment["SHUTDOWN_GRACE"]?.string.flatMap(DurationText.seconds))
        #expect(stopGrace > shutdownGrace)
        #expect(app["build"]?["dockerfile"]?.string == "deploy/Dockerfile")
    }

    // MARK: Metrics: dashboard and alerts

    @Test func metrics_DashboardAndAlertsUseOnlyExportedMetrics() throws {
        let dashboard = try GrafanaDashboard.load()
        let alerts = try AlertRules.load()
        var usedByDashboard: Set<String> = []
        for expression in dashboard.expressions {
            let names = Set(PromQL.metricNames(in: expression))
            #expect(!names.isEmpty, "no metric in dashboard expression \(expression)")
            #expect(names.isSubset(of: ExportedMetrics.names), "unknown metrics \(names.subtracting(ExportedMetrics.names).sorted()) in \(expression)")
            usedByDashboard.formUnion(names)
        }
        for variableMetric in dashboard.variableMetrics {
            #expect(ExportedMetrics.names.contains(variableMetric), "dashboard variable queries unknown metric \(variableMetric)")
        }
        for rule in alerts.rules {
            let names = Set(PromQL.metricNames(in: rule.expression))
            #expect(!names.isEmpty, "no metric in alert \(rule.name)")
            #expect(names.isSubset(of: ExportedMetrics.names), "alert \(rule.name) uses unknown metrics \(names.subtracting(ExportedMetrics.names).sorted())")
        }
        // Every exported metric is on the dashboard somewhere.
        #expect(usedByDashboard == ExportedMetrics.names, "not on the dashboard: \(ExportedMetrics.names.subtracting(usedByDashboard).sorted())")
    }

    @Test func promQLMetricNames_SkipsFunctionsLabelsAndGroupings() {
        let expression = #"""
            histogram_quantile(0.99, sum by (route, le) (rate(http_request_duration_seconds_bucket{job=~"$job", route!="x{y}"}[$__rate_interval])))
              / on (job) group_left (version) ci_callbackd_build_info > bool 0.5 and absent(nope_total offset 5m)
            """#
        #expect(PromQL.metricNames(in: expression) == ["http_request_duration_seconds_bucket", "ci_callbackd_build_info", "nope_total"])
        #expect(PromQL.metricNames(in: "sum without (instance) (up)") == ["up"])
        #expect(!ExportedMetrics.names.isSuperset(of: PromQL.metricNames(in: "rate(made_up_total[5m])")))
    }

    @Test func grafana_DashboardImportsWithPrometheusInputAndRequiredPanels() throws {
        let dashboard = try GrafanaDashboard.load()
        #expect(dashboard.schemaVersion >= 36)
        #expect(dashboard.inputs.contains("DS_PROMETHEUS"))
        #expect(dashboard.datasourceUIDs == ["${DS_PROMETHEUS}"], "panels must use the imported datasource, found \(dashboard.datasourceUIDs)")
        #expect(Set(dashboard.panelIDs).count == dashboard.panelIDs.count, "duplicate panel ids")
        #expect(dashboard.expressions.contains { $0.contains("histogram_quantile(0.99") && $0.contains("http_request_duration_seconds_bucket") && $0.contains("route") })
        #expect(dashboard.expressions.contains { $0.contains("histogram_quantile(0.5") && $0.contains("http_request_duration_seconds_bucket") })
        #expect(dashboard.expressions.contains { $0.contains("histogram_quantile(0.99") && $0.contains("db_commit_duration_seconds_bucket") })
        #expect(dashboard.expressions.contains { $0.contains("by (route, status)") && $0.contains("http_requests_total") })
        #expect(dashboard.expressions.contains { $0.contains("by (outcome, format)") && $0.contains("ci_callbacks_total") })
        // Issue 16: connections refused at capacity, and every listener refusal by reason.
        #expect(dashboard.expressions.contains { $0.contains("http_listener_refusals_total") && $0.contains(#"reason=~"at_capacity|at_capacity_unanswered""#) })
        #expect(dashboard.expressions.contains { $0.contains("by (reason, status)") && $0.contains("http_listener_refusals_total") })
        // Issue 13: deliveries by outcome, pending and oldest pending age per subscription, attempt latency.
        #expect(dashboard.expressions.contains { $0.contains("by (outcome)") && $0.contains("webhook_deliveries_total") })
        #expect(dashboard.expressions.contains { $0.contains("by (subscription)") && $0.contains("webhook_pending_deliveries{") })
        #expect(dashboard.expressions.contains { $0.contains("by (subscription)") && $0.contains("webhook_oldest_pending_seconds") })
        #expect(dashboard.expressions.contains { $0.contains("histogram_quantile(0.99") && $0.contains("webhook_attempt_duration_seconds_bucket") })
    }

    @Test func prometheus_AlertRulesCoverReadinessErrorsCommitLatencyAndRejections() throws {
        let alerts = try AlertRules.load()
        #expect(Set(alerts.rules.map(\.name)).count == alerts.rules.count, "duplicate alert names")
        for rule in alerts.rules {
            #expect(!rule.name.isEmpty && !rule.expression.isEmpty)
            #expect(rule.duration.map { DurationText.seconds($0) != nil } ?? true, "alert \(rule.name) has a bad `for`")
            #expect(["critical", "warning", "info"].contains(rule.severity ?? ""), "alert \(rule.name) severity")
            #expect(rule.hasSummary, "alert \(rule.name) has no summary annotation")
            #expect(PromQL.parenthesesBalance(rule.expression), "alert \(rule.name) has unbalanced brackets")
        }
        let expressions = alerts.rules.map(\.expression)
        #expect(expressions.contains { $0.contains(#"route="readyz""#) })
        #expect(expressions.contains { $0.contains(#"status=~"5..""#) })
        #expect(expressions.contains { $0.contains("db_commit_duration_seconds_bucket") && $0.contains("histogram_quantile(0.99") })
        #expect(expressions.contains { $0.contains(#"outcome="rejected""#) })
        #expect(expressions.contains { $0.contains("http_listener_refusals_total") && $0.contains("at_capacity") })
        // Issue 13: a webhook backlog that ages, dead letters, a failing subscription.
        #expect(expressions.contains { $0.contains("webhook_oldest_pending_seconds") && $0.contains("by (job, subscription)") })
        #expect(expressions.contains { $0.contains("webhook_deliveries_total") && $0.contains("failed") })
        #expect(expressions.contains { $0.contains("webhook_subscription_failing") })
        #expect(expressions.contains { $0.contains("webhook_subscription_breaker") && $0.contains("by (job, subscription)") })
    }

    // MARK: systemd

    @Test func systemd_UnitPassesSystemdAnalyzeVerify() async throws {
        let unitText = try DeployTree.text("systemd/ci-callbackd.service")
        let execStart = "ExecStart=/usr/local/bin/ci-callbackd serve"
        #expect(unitText.split(separator: "\n").contains(Substring(execStart)))

        guard let analyze = SystemdAnalyze.locate() else {
            Issue.record("systemd-analyze not found in PATH: install Debian's `systemd` package (.ci/run does) — this check must not be skipped")
            return
        }
        let outcome = try await SystemdAnalyze.verify(unitText: unitText, executable: "/usr/local/bin/ci-callbackd", analyze: analyze)
        #expect(outcome.status == 0, "systemd-analyze verify exited \(outcome.status): \(outcome.output)")
        // verify exits 0 on unknown keys and unparsable values and only prints them: any output is a defect.
        #expect(outcome.output.isEmpty, "systemd-analyze verify reported: \(outcome.output)")
    }

    @Test func systemdAnalyze_ReportsAnUnknownDirective() async throws {
        guard let analyze = SystemdAnalyze.locate() else {
            Issue.record("systemd-analyze not found in PATH: install Debian's `systemd` package")
            return
        }
        let broken = "[Service]\nExecStart=/usr/local/bin/ci-callbackd serve\nProtectSytem=strict\n"
        let outcome = try await SystemdAnalyze.verify(unitText: broken, executable: "/usr/local/bin/ci-callbackd", analyze: analyze)
        #expect(outcome.output.contains("ProtectSytem"))
    }

    @Test func systemd_UnitIsSandboxedAndOutlastsShutdownGrace() throws {
        let unit = SystemdUnit(try DeployTree.text("systemd/ci-callbackd.service"))
        let required: [String: String] = [
            "EnvironmentFile": "/etc/ci-callbackd/env",
            "Restart": "on-failure",
            "KillSignal": "SIGTERM",
            "ProtectSystem": "strict",
            "ProtectHome": "yes",
            "PrivateTmp": "yes",
            "PrivateDevices": "yes",
            "NoNewPrivileges": "yes",
            "CapabilityBoundingSet": "",
            "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
            "SystemCallFilter": "@system-service",
            "MemoryDenyWriteExecute": "yes",
            "DynamicUser": "yes",
        ]
        for (key, value) in required {
            #expect(unit.values(key).contains(value), "\(key)=\(value) is missing (has \(unit.values(key)))")
        }
        let stopTimeout = try #require(unit.values("TimeoutStopSec").last.flatMap(DurationText.seconds))
        let environment = try EnvFile(DeployTree.text("systemd/env.example"))
        let shutdownGrace = try #require(environment.values["SHUTDOWN_GRACE"].flatMap(DurationText.seconds))
        #expect(stopTimeout > shutdownGrace)
        let unitDefault = try #require(unit.values("Environment").compactMap { $0.hasPrefix("SHUTDOWN_GRACE=") ? $0.dropFirst(15) : nil }.last)
        #expect(DurationText.seconds(String(unitDefault)).map { stopTimeout > $0 } == true)
    }

    @Test func systemd_EnvExampleNamesEverySettingWithPlaceholderSecrets() throws {
        let environment = try EnvFile(DeployTree.text("systemd/env.example"))
        #expect(Set(environment.values.keys) == ServiceSettings.all, "difference: \(Set(environment.values.keys).symmetricDifference(ServiceSettings.all).sorted())")
        for secret in ServiceSettings.secrets {
            let value = environment.values[secret] ?? ""
            #expect(value.isEmpty || value.contains("REPLACE_ME"), "\(secret) is not a placeholder")
        }
    }

    // MARK: README

    @Test func readme_CoversEachDeploymentSecretsMetricsAndRotation() throws {
        let readme = try DeployTree.text("README.md")
        for topic in ["docker compose", "kubectl apply -k", "systemctl", "systemd-analyze verify", "NetworkPolicy", "/metrics", "CALLBACK_TOKENS", "API_TOKENS", "rotation"] {
            #expect(readme.localizedCaseInsensitiveContains(topic), "deploy/README.md does not mention \(topic)")
        }
    }
}

// MARK: - What the service exposes (the contract these files are checked against)

/// The Prometheus series the service exports; dashboard and alerts may use nothing else.
private enum ExportedMetrics {
    static let names: Set<String> = [
        "http_requests_total", "http_request_duration_seconds_bucket", "ci_callbacks_total", "ci_callback_jobs_total",
        "db_commit_duration_seconds_bucket", "db_pool_connections", "db_pool_wait_seconds_total", "db_pool_acquired_total", "db_statements_prepared_total", "http_open_connections",
        "ci_reconcile_sweeps_total", "ci_callbackd_build_info", "ci_callback_verifications_total", "ci_callback_verifications_pending",
        "ci_callback_verification_oldest_pending_seconds", "http_listener_refusals_total", "http_inflight_body_bytes",
        // Issue 13: events and webhook delivery.
        "ci_events_sequenced_total", "webhook_deliveries_queued_total", "webhook_deliveries_skipped_total", "webhook_deliveries_total", "webhook_attempt_duration_seconds_bucket",
        "webhook_pending_deliveries_total", "webhook_pending_deliveries", "webhook_oldest_pending_seconds", "webhook_subscription_failing",
        "webhook_subscription_disabled", "webhook_subscription_breaker", "webhook_breaker_transitions_total", "webhook_worker_errors_total",
    ]
}

/// Every environment variable `ci-callbackd serve` reads, and which of them are secrets.
private enum ServiceSettings {
    static let secrets: Set<String> = ["DATABASE_URL", "CALLBACK_TOKENS", "API_TOKENS", "CI_SECRET_ID", "CI_SECRET_KEY", "CI_SESSION_TOKEN"]
    static let all: Set<String> = secrets.union([
        "HOST", "PORT", "DB_POOL_SIZE", "MAX_HEADER_BYTES", "MAX_BODY_BYTES", "REQUEST_READ_TIMEOUT", "IDLE_TIMEOUT",
        "MAX_CONNECTIONS", "MAX_CONNECTIONS_PER_PEER", "SHUTDOWN_GRACE", "AUTO_MIGRATE", "MIGRATIONS_DIR", "MIGRATION_LOCK_TIMEOUT", "MIGRATION_LOCK_ATTEMPTS", "LOG_LEVEL", "LOG_FORMAT",
        "CALLBACK_ALLOW_CIDRS", "TRUSTED_PROXY_CIDRS", "CI_BUCKET", "CI_REGION", "CI_QUEUE_ID", "PUBLIC_CALLBACK_URL",
        "VERIFY_CALLBACKS", "MAX_INFLIGHT_BODY_BYTES",
    ])
}

/// Why a deploy file could not be read or understood. The description names the file, never its contents
/// (some of them hold secrets once filled in).
private struct DeployFileError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

// MARK: - Files

/// The repository's `deploy/` folder.
private enum DeployTree {
    static let root: URL = repositoryRoot.appendingPathComponent("deploy")

    static func text(_ relativePath: String) throws -> String {
        let url = root.appendingPathComponent(relativePath)
        do {
            return try String(contentsOf: url, encoding: .utf8)
        } catch {
            throw DeployFileError("cannot read deploy/\(relativePath)")
        }
    }

    /// Paths relative to `deploy/`, sorted.
    static func files() throws -> [String] {
        // Symlinks resolved on both sides, so a checkout reached through a symlink still lists its files.
        let base = root.resolvingSymlinksInPath()
        guard let enumerator = FileManager.default.enumerator(at: base, includingPropertiesForKeys: [.isRegularFileKey]) else {
            throw DeployFileError("cannot list \(root.path)")
        }
        let prefix = base.path + "/"
        var paths: [String] = []
        for case let url as URL in enumerator where (try? url.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true {
            let path = url.resolvingSymlinksInPath().path
            if path.hasPrefix(prefix) { paths.append(String(path.dropFirst(prefix.count))) }
        }
        return paths.sorted()
    }
}

/// The README's configuration table, the documented source of defaults.
private enum ReadmeConfiguration {
    static func defaultValue(environment variable: String) throws -> String {
        let readme = try String(contentsOf: DeployTree.root.deletingLastPathComponent().appendingPathComponent("README.md"), encoding: .utf8)
        for line in readme.split(separator: "\n") where line.hasPrefix("|") {
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            if cells.count >= 3, cells[1] == "`\(variable)`" {
                return cells[2].trimmingCharacters(in: CharacterSet(charactersIn: "`"))
            }
        }
        throw DeployFileError("README.md's configuration table has no row for \(variable)")
    }
}

// MARK: - YAML

private enum YAMLDocuments {
    /// Every document of a (multi-document) YAML text. Yams' sequence swallows a later document's error into
    /// its `error` property, so it is drained by hand and the error rethrown; duplicate keys, which Yams
    /// accepts silently and Kubernetes rejects, are an error too.
    static func load(_ text: String) throws -> [Node] {
        var sequence = try Yams.compose_all(yaml: text)
        var documents: [Node] = []
        while let document = sequence.next() {
            try rejectDuplicateKeys(document, path: "")
            documents.append(document)
        }
        if let error = sequence.error { throw error }
        return documents
    }

    private static func rejectDuplicateKeys(_ node: Node, path: String) throws {
        switch node {
        case .scalar:
            return
        case .sequence(let sequence):
            for (index, element) in sequence.enumerated() { try rejectDuplicateKeys(element, path: "\(path)[\(index)]") }
        case .mapping(let mapping):
            var seen: Set<String> = []
            for (key, value) in mapping {
                let name = key.string ?? "\(key)"
                if !seen.insert(name).inserted { throw DeployFileError("duplicate key \(path).\(name)") }
                try rejectDuplicateKeys(value, path: "\(path).\(name)")
            }
        }
    }
}

extension Node {
    /// A sequence's elements; empty for a scalar or mapping.
    fileprivate var elements: [Node] { sequence.map { Array($0) } ?? [] }

    /// A mapping of scalar keys to scalar values (labels, selectors) as plain strings.
    fileprivate func stringMapping() -> [String: String] {
        var result: [String: String] = [:]
        for (key, value) in mapping ?? [:] {
            if let key = key.string, let value = value.string { result[key] = value }
        }
        return result
    }
}

/// The manifests in `deploy/kubernetes/`, one document of each kind.
private struct KubernetesManifests {
    var deployment: Node
    var service: Node
    var configMap: Node
    var secret: Node
    var pdb: Node
    var hpa: Node

    static func load() throws -> KubernetesManifests {
        var byKind: [String: Node] = [:]
        for file in try DeployTree.files() where file.hasPrefix("kubernetes/") && file.hasSuffix(".yaml") {
            for document in try YAMLDocuments.load(DeployTree.text(file)) {
                guard let kind = document["kind"]?.string, document["apiVersion"] != nil else { continue }
                if byKind[kind] != nil { throw DeployFileError("two \(kind) manifests under deploy/kubernetes") }
                byKind[kind] = document
            }
        }
        func require(_ kind: String) throws -> Node {
            guard let node = byKind[kind] else { throw DeployFileError("no \(kind) under deploy/kubernetes") }
            return node
        }
        return KubernetesManifests(
            deployment: try require("Deployment"), service: try require("Service"), configMap: try require("ConfigMap"),
            secret: try require("Secret"), pdb: try require("PodDisruptionBudget"), hpa: try require("HorizontalPodAutoscaler")
        )
    }

    func mainContainer() throws -> Node {
        let containers = deployment["spec"]?["template"]?["spec"]?["containers"]?.elements ?? []
        guard let container = containers.first(where: { $0["name"]?.string == "ci-callbackd" }) else {
            throw DeployFileError("the Deployment has no container named ci-callbackd")
        }
        return container
    }

    /// A probe's or Service's port, by number or by the container port's name.
    func resolvePort(_ port: Node?, in container: Node) throws -> Int {
        if let number = port?.int { return number }
        let name = port?.string ?? ""
        for entry in container["ports"]?.elements ?? [] where entry["name"]?.string == name {
            if let number = entry["containerPort"]?.int { return number }
        }
        throw DeployFileError("port '\(name)' is not a container port")
    }
}

// MARK: - Other formats

/// Durations as the deploy files write them: `10s`, `250ms`, `2m`/`2min`, `1h`, or plain seconds.
private enum DurationText {
    static func seconds(_ text: String) -> Double? {
        let units: [(String, Double)] = [("ms", 0.001), ("min", 60), ("s", 1), ("m", 60), ("h", 3600)]
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        for (suffix, scale) in units where trimmed.hasSuffix(suffix) {
            return Double(trimmed.dropLast(suffix.count)).map { $0 * scale }
        }
        return Double(trimmed)
    }
}

/// A Dockerfile as instructions grouped by stage, with line continuations joined and comments dropped.
private struct Dockerfile {
    struct Instruction {
        var keyword: String
        var arguments: String
    }

    /// Instructions before the first FROM (global ARGs).
    var preamble: [Instruction] = []
    var stages: [[Instruction]] = []

    init(_ text: String) throws {
        var logical: [String] = []
        var pending = ""
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("#") || (line.isEmpty && pending.isEmpty) { continue }
            if line.hasSuffix("\\") {
                pending += line.dropLast().trimmingCharacters(in: .whitespaces) + " "
            } else {
                logical.append((pending + line).trimmingCharacters(in: .whitespaces))
                pending = ""
            }
        }
        for line in logical where !line.isEmpty {
            let parts = line.split(separator: " ", maxSplits: 1)
            let instruction = Instruction(keyword: parts[0].uppercased(), arguments: parts.count > 1 ? String(parts[1]) : "")
            if instruction.keyword == "FROM" {
                stages.append([instruction])
            } else if stages.isEmpty {
                preamble.append(instruction)
            } else {
                stages[stages.count - 1].append(instruction)
            }
        }
        if stages.isEmpty { throw DeployFileError("Dockerfile has no FROM") }
    }

    /// Substitutes the global `ARG NAME=default` values into a FROM line.
    func resolve(_ text: String) -> String {
        var result = text
        for argument in preamble where argument.keyword == "ARG" {
            let pair = argument.arguments.split(separator: "=", maxSplits: 1).map(String.init)
            guard pair.count == 2 else { continue }
            result = result.replacingOccurrences(of: "${\(pair[0])}", with: pair[1]).replacingOccurrences(of: "$\(pair[0])", with: pair[1])
        }
        return result
    }
}

/// A systemd unit's `Key=value` assignments, in order (a key may repeat).
private struct SystemdUnit {
    var assignments: [(key: String, value: String)] = []

    init(_ text: String) {
        for line in text.split(separator: "\n") {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard !trimmed.hasPrefix("#"), !trimmed.hasPrefix(";"), !trimmed.hasPrefix("["),
                let equals = trimmed.firstIndex(of: "=")
            else { continue }
            assignments.append((String(trimmed[..<equals]), String(trimmed[trimmed.index(after: equals)...])))
        }
    }

    func values(_ key: String) -> [String] { assignments.filter { $0.key == key }.map(\.value) }
}

/// An `EnvironmentFile=`: `KEY=value` lines, comments and blank lines ignored.
private struct EnvFile {
    var values: [String: String] = [:]

    init(_ text: String) throws {
        for line in text.split(separator: "\n") {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            guard let equals = trimmed.firstIndex(of: "="), !trimmed.hasPrefix("export ") else {
                throw DeployFileError("env file line is not KEY=value")
            }
            let key = String(trimmed[..<equals])
            if values[key] != nil { throw DeployFileError("env file sets \(key) twice") }
            values[key] = String(trimmed[trimmed.index(after: equals)...])
        }
    }
}

/// The imported dashboard, reduced to what the tests check.
private struct GrafanaDashboard {
    var schemaVersion: Int
    var inputs: [String]
    var expressions: [String]
    var variableMetrics: [String]
    var datasourceUIDs: Set<String>
    var panelIDs: [Int]

    static func load() throws -> GrafanaDashboard {
        let object = try JSONSerialization.jsonObject(with: Data(DeployTree.text("grafana/ci-callbackd-dashboard.json").utf8))
        guard let root = object as? [String: Any] else { throw DeployFileError("the dashboard is not a JSON object") }
        var dashboard = GrafanaDashboard(
            schemaVersion: root["schemaVersion"] as? Int ?? 0,
            inputs: (root["__inputs"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String },
            expressions: [], variableMetrics: [], datasourceUIDs: [], panelIDs: []
        )
        func collect(panels: [[String: Any]]) {
            for panel in panels {
                if let id = panel["id"] as? Int { dashboard.panelIDs.append(id) }
                if let uid = (panel["datasource"] as? [String: Any])?["uid"] as? String { dashboard.datasourceUIDs.insert(uid) }
                for target in panel["targets"] as? [[String: Any]] ?? [] {
                    if let expression = target["expr"] as? String { dashboard.expressions.append(expression) }
                    if let uid = (target["datasource"] as? [String: Any])?["uid"] as? String { dashboard.datasourceUIDs.insert(uid) }
                }
                collect(panels: panel["panels"] as? [[String: Any]] ?? [])
            }
        }
        collect(panels: root["panels"] as? [[String: Any]] ?? [])
        for variable in (root["templating"] as? [String: Any])?["list"] as? [[String: Any]] ?? [] {
            if let uid = (variable["datasource"] as? [String: Any])?["uid"] as? String { dashboard.datasourceUIDs.insert(uid) }
            let query = ((variable["query"] as? [String: Any])?["query"] as? String) ?? (variable["query"] as? String) ?? ""
            // label_values(metric{…}, label): the first argument's metric.
            if query.hasPrefix("label_values(") {
                let argument = query.dropFirst("label_values(".count).prefix { $0 != "," && $0 != "{" && $0 != ")" }
                dashboard.variableMetrics.append(argument.trimmingCharacters(in: .whitespaces))
            }
        }
        return dashboard
    }
}

/// The alert rules in `deploy/prometheus/alerts.yml`.
private struct AlertRules {
    struct Rule {
        var name: String
        var expression: String
        var duration: String?
        var severity: String?
        var hasSummary: Bool
    }

    var rules: [Rule] = []

    static func load() throws -> AlertRules {
        guard let document = try YAMLDocuments.load(DeployTree.text("prometheus/alerts.yml")).first,
            let groups = document["groups"]?.sequence, !groups.isEmpty
        else { throw DeployFileError("alerts.yml has no groups") }
        var result = AlertRules()
        for group in groups {
            guard group["name"]?.string != nil, let rules = group["rules"]?.sequence else {
                throw DeployFileError("an alert group has no name or no rules")
            }
            for rule in rules {
                result.rules.append(
                    Rule(
                        name: rule["alert"]?.string ?? "", expression: rule["expr"]?.string ?? "", duration: rule["for"]?.string,
                        severity: rule["labels"]?["severity"]?.string, hasSummary: rule["annotations"]?["summary"]?.string != nil
                    )
                )
            }
        }
        return result
    }
}

/// Just enough PromQL lexing to list the series an expression selects.
private enum PromQL {
    private static let keywords: Set<String> = [
        "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset", "atan2",
        "inf", "nan",
        // Aggregation operators may be followed by `by (…)` rather than `(`, so they are not always calls.
        "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile",
        "limitk", "limit_ratio",
    ]
    private static let groupingKeywords: Set<String> = ["by", "without", "on", "ignoring", "group_left", "group_right"]

    /// Metric names in `expression`, in order of first appearance: identifiers that are not functions (followed
    /// by `(`), keywords, label lists of groupings, label matchers, range/offset durations or string contents.
    static func metricNames(in expression: String) -> [String] {
        let characters = Array(expression)
        var names: [String] = []
        var index = 0
        var skipNextParenthesis = false

        func isIdentifierStart(_ c: Character) -> Bool { c.isLetter || c == "_" || c == ":" }
        func isIdentifierPart(_ c: Character) -> Bool { isIdentifierStart(c) || c.isNumber }
        func skip(past closing: Character, from start: Int) -> Int {
            var position = start
            var quote: Character?
            while position < characters.count {
                let c = characters[position]
                if let open = quote {
                    if c == "\\" { position += 1 } else if c == open { quote = nil }
                } else if c == "\"" || c == "'" || c == "`" {
                    quote = c
                } else if c == closing {
                    return position + 1
                }
                position += 1
            }
            return position
        }

        while index < characters.count {
            let c = characters[index]
            if c == "\"" || c == "'" || c == "`" {
                index = skip(past: c, from: index + 1)
            } else if c == "{" {
                index = skip(past: "}", from: index + 1)
            } else if c == "[" {
                index = skip(past: "]", from: index + 1)
            } else if c == "(" && skipNextParenthesis {
                skipNextParenthesis = false
                index = skip(past: ")", from: index + 1)
            } else if c == "$" {
                // A Grafana variable ($__rate_interval, $job) outside brackets.
                index += 1
                while index < characters.count, isIdentifierPart(characters[index]) { index += 1 }
            } else if c.isNumber {
                // Numbers and durations (5m, 0.99, 1e3).
                while index < characters.count, isIdentifierPart(characters[index]) || characters[index] == "." { index += 1 }
            } else if isIdentifierStart(c) {
                let start = index
                while index < characters.count, isIdentifierPart(characters[index]) { index += 1 }
                let word = String(characters[start..<index])
                var next = index
                while next < characters.count, characters[next].isWhitespace { next += 1 }
                let isCall = next < characters.count && characters[next] == "("
                if groupingKeywords.contains(word.lowercased()) {
                    skipNextParenthesis = isCall
                } else if word.lowercased() == "offset" {
                    // The duration after `offset` is consumed by the number branch.
                    continue
                } else if !isCall && !keywords.contains(word.lowercased()) && !names.contains(word) {
                    names.append(word)
                }
            } else {
                index += 1
            }
        }
        return names
    }

    /// Whether (), [] and {} nest properly outside string literals.
    static func parenthesesBalance(_ expression: String) -> Bool {
        var stack: [Character] = []
        var quote: Character?
        var escaped = false
        let pairs: [Character: Character] = [")": "(", "]": "[", "}": "{"]
        for c in expression {
            if let open = quote {
                if escaped { escaped = false } else if c == "\\" { escaped = true } else if c == open { quote = nil }
                continue
            }
            switch c {
            case "\"", "'", "`": quote = c
            case "(", "[", "{": stack.append(c)
            case ")", "]", "}":
                guard stack.popLast() == pairs[c] else { return false }
            default: break
            }
        }
        return stack.isEmpty && quote == nil
    }
}

/// Runs `systemd-analyze verify` on a copy of a unit whose ExecStart binary is replaced by a stub, since
/// verify insists the binary exists and the service is not installed on the test machine.
private enum SystemdAnalyze {
    struct Outcome {
        var status: Int32
        var output: String
    }

    static func locate() -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let directories = path.split(separator: ":").map(String.init) + ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        return directories.map { $0 + "/systemd-analyze" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static func verify(unitText: String, executable: String, analyze: String) async throws -> Outcome {
        let fileManager = FileManager.default
        let directory = fileManager.temporaryDirectory.appendingPathComponent("deploy-systemd-\(UUID().uuidString)")
        try fileManager.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? fileManager.removeItem(at: directory) }

        let stub = directory.appendingPathComponent("ci-callbackd")
        try "#!/bin/sh\nexit 0\n".write(to: stub, atomically: true, encoding: .utf8)
        try fileManager.setAttributes([.posixPermissions: 0o755], ofItemAtPath: stub.path)
        let unit = directory.appendingPathComponent("ci-callbackd.service")
        try unitText.replacingOccurrences(of: executable, with: stub.path).write(to: unit, atomically: true, encoding: .utf8)

        // --man=no: the unit documents nothing under man(1); checking that would need man-db.
        let finished = try await ChildProcess.run(analyze, ["verify", "--man=no", unit.path], within: .seconds(120))
        let output = (finished.output + finished.errors).trimmingCharacters(in: .whitespacesAndNewlines)
        return Outcome(status: finished.status.code ?? -1, output: output)
    }
}
