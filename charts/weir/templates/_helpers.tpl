{{/*
Names, labels and the pod template shared by the Deployment and the DaemonSet.
*/}}

{{- define "weir.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: "<release>-weir", or the release name alone when it already contains the chart
name. Truncated to 63 characters (the DNS label limit of some name fields).
*/}}
{{- define "weir.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "weir.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "weir.selectorLabels" -}}
app.kubernetes.io/name: {{ include "weir.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "weir.labels" -}}
helm.sh/chart: {{ include "weir.chart" . }}
{{ include "weir.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: weir
{{- end }}

{{- define "weir.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "weir.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create=false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "weir.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The pod's port for a Gateway listener port: port + listenerPortOffset.
Call with (dict "port" .port "root" $).
*/}}
{{- define "weir.targetPort" -}}
{{- add (int .port) (int .root.Values.listenerPortOffset) }}
{{- end }}

{{/*
gatewayPortRange's bounds (addressMode perGateway).
*/}}
{{- define "weir.portRangeLow" -}}
{{- index (splitList "-" .Values.gatewayPortRange) 0 | int }}
{{- end }}
{{- define "weir.portRangeHigh" -}}
{{- index (splitList "-" .Values.gatewayPortRange) 1 | int }}
{{- end }}

{{/*
The Weir pods' selector labels as KEY=VALUE,... (--gateway-pod-selector).
*/}}
{{- define "weir.podSelectorArg" -}}
{{- printf "app.kubernetes.io/name=%s,app.kubernetes.io/instance=%s" (include "weir.name" .) .Release.Name }}
{{- end }}

{{/*
The lowest pod port below 1024 (listener ports after the offset, and the admin port), or ""
when every port is unprivileged. Decides NET_BIND_SERVICE and the sysctl.
*/}}
{{- define "weir.lowestPrivilegedPort" -}}
{{- $lowest := 1024 }}
{{- if eq .Values.addressMode "shared" }}
{{- range .Values.service.ports }}
{{- $p := int (include "weir.targetPort" (dict "port" .port "root" $)) }}
{{- if lt $p $lowest }}{{ $lowest = $p }}{{ end }}
{{- end }}
{{- else }}
{{- $p := int (include "weir.portRangeLow" .) }}
{{- if lt $p $lowest }}{{ $lowest = $p }}{{ end }}
{{- end }}
{{- if lt (int .Values.admin.port) $lowest }}{{ $lowest = int .Values.admin.port }}{{ end }}
{{- if lt $lowest 1024 }}{{ $lowest }}{{ end }}
{{- end }}

{{/*
Values the schema cannot check: duplicate port names or pod ports, and a grace period that
does not outlast the drain.
*/}}
{{- define "weir.validate" -}}
{{- if eq .Values.addressMode "perGateway" }}
{{- $low := int (include "weir.portRangeLow" .) }}
{{- $high := int (include "weir.portRangeHigh" .) }}
{{- if or (lt $low 1) (gt $high 65535) (gt $low $high) }}
{{- fail (printf "gatewayPortRange %s: need 1 <= LOW <= HIGH <= 65535" .Values.gatewayPortRange) }}
{{- end }}
{{- $admin := int .Values.admin.port }}
{{- if and (ge $admin $low) (le $admin $high) }}
{{- fail (printf "admin.port %d is inside gatewayPortRange %s; move one of them" $admin .Values.gatewayPortRange) }}
{{- end }}
{{- end }}
{{- $names := dict }}
{{- $ports := dict (toString (int .Values.admin.port)) "admin" }}
{{- range .Values.service.ports }}
{{- if hasKey $names .name }}
{{- fail (printf "service.ports: name %q is used twice" .name) }}
{{- end }}
{{- if eq .name "admin" }}
{{- fail "service.ports: the name \"admin\" is taken by the admin port" }}
{{- end }}
{{- $_ := set $names .name true }}
{{- $tp := include "weir.targetPort" (dict "port" .port "root" $) }}
{{- if hasKey $ports $tp }}
{{- fail (printf "service.ports: %s maps to pod port %s (port + listenerPortOffset), which %s already uses" .name $tp (get $ports $tp)) }}
{{- end }}
{{- if gt (int $tp) 65535 }}
{{- fail (printf "service.ports: %s maps to pod port %s (port + listenerPortOffset), above 65535" .name $tp) }}
{{- end }}
{{- $_ := set $ports $tp .name }}
{{- end }}
{{- $drain := 0.0 }}
{{- range regexFindAll "[0-9]+(\\.[0-9]+)?(ms|h|m|s)" .Values.drainTimeout -1 }}
{{- $n := regexFind "^[0-9.]+" . }}
{{- $unit := get (dict "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0) (trimPrefix $n .) }}
{{- $drain = addf $drain (mulf (float64 $n) $unit) }}
{{- end }}
{{- if ge $drain (float64 .Values.terminationGracePeriodSeconds) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be longer than drainTimeout (%s), or draining requests are killed" .Values.terminationGracePeriodSeconds .Values.drainTimeout) }}
{{- end }}
{{- end }}

{{/*
The pod template of the Deployment or DaemonSet.
*/}}
{{- define "weir.podTemplate" -}}
{{- $lowPort := include "weir.lowestPrivilegedPort" . -}}
metadata:
  labels:
    {{- include "weir.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    prometheus.io/scrape: "true"
    prometheus.io/port: {{ .Values.admin.port | quote }}
    prometheus.io/path: /metrics
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "weir.serviceAccountName" . }}
  # Weir talks to the API server with this account's token (in-cluster config).
  automountServiceAccountToken: true
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  # Longer than --drain-timeout, so in-flight requests finish before SIGKILL.
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    seccompProfile:
      type: RuntimeDefault
    {{- if $lowPort }}
    # A pod port below 1024 (see listenerPortOffset): let the non-root process bind it.
    sysctls:
      - name: net.ipv4.ip_unprivileged_port_start
        value: {{ $lowPort | quote }}
    {{- end }}
  containers:
    - name: weir
      image: {{ include "weir.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - run
        - {{ printf "--admin-addr=0.0.0.0:%d" (int .Values.admin.port) | quote }}
        - {{ printf "--status-addr=127.0.0.1:%d" (int .Values.admin.statusPort) | quote }}
        - {{ printf "--listener-port-offset=%d" (int .Values.listenerPortOffset) | quote }}
        - {{ printf "--gateway-class-controller=%s" .Values.controllerName | quote }}
        {{- if eq .Values.addressMode "shared" }}
        - {{ printf "--gateway-service=%s/%s" .Release.Namespace (include "weir.fullname" .) | quote }}
        {{- else }}
        - {{ printf "--gateway-port-range=%s" .Values.gatewayPortRange | quote }}
        - {{ printf "--gateway-pod-selector=%s" (include "weir.podSelectorArg" .) | quote }}
        {{- end }}
        - {{ printf "--leader-election-namespace=%s" .Release.Namespace | quote }}
        - {{ printf "--leader-election-id=%s" .Values.leaderElection.id | quote }}
        - {{ printf "--lease-duration=%s" .Values.leaderElection.leaseDuration | quote }}
        - {{ printf "--drain-timeout=%s" .Values.drainTimeout | quote }}
        - {{ printf "--max-connections=%d" (int .Values.maxConnections) | quote }}
        - {{ printf "--log-format=%s" .Values.log.format | quote }}
        - {{ printf "--log-level=%s" .Values.log.level | quote }}
        - {{ printf "--access-log=%s" (ternary "on" "off" .Values.accessLog.enabled) | quote }}
        - {{ printf "--access-log-sample=%s" (toString .Values.accessLog.sample) | quote }}
        {{- with .Values.tracing }}
        {{- if .otlpEndpoint }}
        - {{ printf "--otlp-endpoint=%s" .otlpEndpoint | quote }}
        - {{ printf "--otlp-protocol=%s" .protocol | quote }}
        - {{ printf "--trace-sample=%s" (toString .sample) | quote }}
        {{- end }}
        {{- end }}
        {{- if .Values.sessionPersistence.keySecret }}
        - "--session-key-file=/etc/weir/session/key"
        {{- end }}
        {{- /* 0 in shared mode: no flag, Weir counts the ready Pods behind the Service. */}}
        {{- $replicas := int (.Values.rateLimit.replicas | default 0) }}
        {{- if and (eq $replicas 0) (ne .Values.addressMode "shared") }}
        {{- $replicas = ternary (max 1 (int .Values.replicaCount)) 1 (eq .Values.kind "Deployment") }}
        {{- end }}
        {{- with .Values.rateLimit }}
        - {{ printf "--rate-limit-timeout=%s" .timeout | quote }}
        {{- if .failClosed }}
        - "--rate-limit-fail-closed"
        {{- end }}
        {{- end }}
        {{- if gt $replicas 0 }}
        - {{ printf "--rate-limit-replicas=%d" $replicas | quote }}
        {{- end }}
        {{- if .Values.rateLimit.redis.caSecret }}
        - "--rate-limit-redis-ca=/etc/weir/redis-ca/ca.crt"
        {{- end }}
        {{- if .Values.securityPolicy.jwksCAConfigMap }}
        - "--jwks-ca=/etc/weir/jwks-ca/ca.crt"
        {{- end }}
      env:
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: POD_NAMESPACE
          valueFrom:
            fieldRef:
              fieldPath: metadata.namespace
        - name: POD_IP
          valueFrom:
            fieldRef:
              fieldPath: status.podIP
        {{- with .Values.rateLimit.redis }}
        {{- if .url }}
        # --rate-limit-redis (BackendTrafficPolicy rateLimit.global).
        - name: WEIR_RATE_LIMIT_REDIS
          value: {{ .url | quote }}
        {{- else if .urlSecret }}
        # --rate-limit-redis (BackendTrafficPolicy rateLimit.global), from the Secret's `url`.
        - name: WEIR_RATE_LIMIT_REDIS
          valueFrom:
            secretKeyRef:
              name: {{ .urlSecret | quote }}
              key: url
        {{- end }}
        {{- end }}
        # --zone (BackendTrafficPolicy loadBalancer.zoneAware): the value `zone`, else the
        # pod's copy of its node's zone label (set by Kubernetes' PodTopologyLabelsAdmission,
        # 1.33+; empty without it: no zone preference).
        - name: WEIR_ZONE
          {{- if .Values.zone }}
          value: {{ .Values.zone | quote }}
          {{- else }}
          valueFrom:
            fieldRef:
              fieldPath: metadata.labels['topology.kubernetes.io/zone']
          {{- end }}
      # perGateway: each Gateway's Service targets the pod ports Weir assigned it (numeric
      # targetPorts need no containerPort).
      ports:
        {{- if eq .Values.addressMode "shared" }}
        {{- range .Values.service.ports }}
        - name: {{ .name }}
          containerPort: {{ include "weir.targetPort" (dict "port" .port "root" $) }}
          protocol: TCP
        {{- end }}
        {{- end }}
        - name: admin
          containerPort: {{ .Values.admin.port }}
          protocol: TCP
      livenessProbe:
        httpGet:
          path: /healthz
          port: admin
        periodSeconds: 10
        timeoutSeconds: 2
        failureThreshold: 3
      readinessProbe:
        # Ready once every watch has synced and the first routing snapshot is live.
        httpGet:
          path: /readyz
          port: admin
        periodSeconds: 5
        timeoutSeconds: 2
        failureThreshold: 3
      {{- with .Values.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        capabilities:
          drop:
            - ALL
          {{- if $lowPort }}
          add:
            - NET_BIND_SERVICE
          {{- end }}
      {{- if or .Values.sessionPersistence.keySecret .Values.rateLimit.redis.caSecret .Values.securityPolicy.jwksCAConfigMap }}
      volumeMounts:
        {{- if .Values.sessionPersistence.keySecret }}
        - name: session-key
          mountPath: /etc/weir/session
          readOnly: true
        {{- end }}
        {{- if .Values.rateLimit.redis.caSecret }}
        - name: redis-ca
          mountPath: /etc/weir/redis-ca
          readOnly: true
        {{- end }}
        {{- if .Values.securityPolicy.jwksCAConfigMap }}
        - name: jwks-ca
          mountPath: /etc/weir/jwks-ca
          readOnly: true
        {{- end }}
      {{- end }}
  {{- if or .Values.sessionPersistence.keySecret .Values.rateLimit.redis.caSecret .Values.securityPolicy.jwksCAConfigMap }}
  volumes:
    {{- if .Values.sessionPersistence.keySecret }}
    # The key every replica seals session values with (--session-key-file): its `key` entry.
    - name: session-key
      secret:
        secretName: {{ .Values.sessionPersistence.keySecret | quote }}
        items:
          - key: key
            path: key
    {{- end }}
    {{- if .Values.rateLimit.redis.caSecret }}
    # The CA a rediss:// Redis's certificate is verified with (--rate-limit-redis-ca).
    - name: redis-ca
      secret:
        secretName: {{ .Values.rateLimit.redis.caSecret | quote }}
        items:
          - key: ca.crt
            path: ca.crt
    {{- end }}
    {{- if .Values.securityPolicy.jwksCAConfigMap }}
    # The CAs trusted for https remoteJWKS (--jwks-ca): the ConfigMap's `ca.crt` entry.
    - name: jwks-ca
      configMap:
        name: {{ .Values.securityPolicy.jwksCAConfigMap | quote }}
        items:
          - key: ca.crt
            path: ca.crt
    {{- end }}
  {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
