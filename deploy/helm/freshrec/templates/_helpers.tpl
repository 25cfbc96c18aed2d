{{/* Names and labels */}}

{{- define "freshrec.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "freshrec.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<component>"; a StatefulSet's pod names add "-<ordinal>", so stay short */}}
{{- define "freshrec.componentName" -}}
{{- printf "%s-%s" (include "freshrec.fullname" .root) .component | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "freshrec.selectorLabels" -}}
app.kubernetes.io/name: {{ include "freshrec.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "freshrec.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "freshrec.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: freshrec
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end -}}

{{- define "freshrec.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "freshrec.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "freshrec.apiKeysSecret" -}}
{{- default (printf "%s-api-keys" (include "freshrec.fullname" .)) .Values.apiKeys.existingSecret -}}
{{- end -}}

{{- define "freshrec.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion (toString .Values.image.tag)) -}}
{{- end -}}

{{/*
The settings a component's ConfigMap holds: the common `env` map overridden by the
component's own. Keys the chart sets itself are refused, so that a value never silently
loses to another.
*/}}
{{- define "freshrec.configEnv" -}}
{{- $env := merge (deepCopy (.values.env | default dict)) (deepCopy (.root.Values.env | default dict)) -}}
{{- $reserved := list "FRESHREC_REDIS_URL" "FRESHREC_KAFKA_BOOTSTRAP" "FRESHREC_API_KEYS" "FRESHREC_CONSUMER__GROUP_INSTANCE_ID" "FRESHREC_TRAINER__MEMBER" "FRESHREC_INGEST_HOST" "FRESHREC_INGEST_PORT" "FRESHREC_RANKER_HOST" "FRESHREC_RANKER_PORT" "FRESHREC_TRAINER_HOST" "FRESHREC_TRAINER_PORT" "FRESHREC_INDEX_SNAPSHOT" "FRESHREC_TRAINER_URL" -}}
{{- range $key, $value := $env -}}
{{- if has $key $reserved -}}
{{- fail (printf "env %s is set by the chart (redis, kafka, apiKeys, <component>.port, ranker.indexSnapshot, ranker.trainerUrl): remove it from the env maps" $key) -}}
{{- end -}}
{{- if not (regexMatch "^[A-Za-z_][A-Za-z0-9_]*$" $key) -}}
{{- fail (printf "env: %q is not an environment variable name" $key) -}}
{{- end -}}
{{- if kindIs "float64" $value -}}
{{- if eq $value (floor $value) }}
{{ $key }}: {{ int64 $value | toString | quote }}
{{- else }}
{{ $key }}: {{ $value | toString | quote }}
{{- end -}}
{{- else if kindIs "invalid" $value -}}
{{- fail (printf "env %s has no value (write \"\" for an empty one)" $key) -}}
{{- else }}
{{ $key }}: {{ $value | toString | quote }}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* One of the component's value or the chart-wide default, as YAML (toYaml passthrough) */}}
{{- define "freshrec.pick" -}}
{{- $own := index .values .key -}}
{{- if $own -}}
{{- toYaml $own -}}
{{- else -}}
{{- $common := index .root.Values .key -}}
{{- if $common -}}{{- toYaml $common -}}{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The pod template every component shares. Args: root, component, values (the component's
values), module (python -m <module>), extraEnv (list of EnvVar), volumes, volumeMounts.
*/}}
{{- define "freshrec.podTemplate" -}}
{{- $root := .root -}}
{{- $v := .values -}}
metadata:
  labels:
    {{- include "freshrec.selectorLabels" . | nindent 4 }}
    {{- with (include "freshrec.pick" (dict "root" $root "values" $v "key" "podLabels")) }}
    {{- . | nindent 4 }}
    {{- end }}
  annotations:
    # a changed setting rolls the pods
    checksum/config: {{ include "freshrec.configEnv" . | sha256sum }}
    {{- with (include "freshrec.pick" (dict "root" $root "values" $v "key" "podAnnotations")) }}
    {{- . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "freshrec.serviceAccountName" $root }}
  automountServiceAccountToken: {{ $root.Values.automountServiceAccountToken }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
  {{- with $root.Values.podSecurityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- range $key := list "nodeSelector" "affinity" "tolerations" "topologySpreadConstraints" }}
  {{- with (include "freshrec.pick" (dict "root" $root "values" $v "key" $key)) }}
  {{ $key }}:
    {{- . | nindent 4 }}
  {{- end }}
  {{- end }}
  containers:
    - name: {{ .component }}
      image: {{ include "freshrec.image" $root | quote }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      # the entry point `freshrec stack` runs
      command: ["python", "-m", {{ .module | quote }}]
      ports:
        - name: http
          containerPort: {{ $v.port }}
          protocol: TCP
      envFrom:
        - configMapRef:
            name: {{ include "freshrec.componentName" . }}
      env:
        {{- if $root.Values.redis.existingSecret }}
        - name: FRESHREC_REDIS_URL
          valueFrom:
            secretKeyRef:
              name: {{ $root.Values.redis.existingSecret }}
              key: {{ $root.Values.redis.existingSecretKey }}
        {{- else }}
        - name: FRESHREC_REDIS_URL
          value: {{ required "redis.url is required" $root.Values.redis.url | quote }}
        {{- end }}
        - name: FRESHREC_KAFKA_BOOTSTRAP
          value: {{ required "kafka.bootstrapServers is required" $root.Values.kafka.bootstrapServers | quote }}
        - name: FRESHREC_API_KEYS
          valueFrom:
            secretKeyRef:
              name: {{ include "freshrec.apiKeysSecret" $root }}
              key: {{ $root.Values.apiKeys.existingSecretKey }}
        - name: FRESHREC_{{ upper .component }}_HOST
          value: "0.0.0.0"
        - name: FRESHREC_{{ upper .component }}_PORT
          value: {{ $v.port | toString | quote }}
        {{- with .extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- with $v.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $v.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.securityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      startupProbe:
        httpGet: {path: /healthz, port: http}
        {{- toYaml $v.startupProbe | nindent 8 }}
      readinessProbe:
        httpGet: {path: /readyz, port: http}
        {{- toYaml $v.readinessProbe | nindent 8 }}
      livenessProbe:
        httpGet: {path: /healthz, port: http}
        {{- toYaml $v.livenessProbe | nindent 8 }}
      {{- if $v.preStopSleepSeconds }}
      lifecycle:
        # let the Service drop this pod from its endpoints before the process stops
        preStop:
          exec:
            command: ["sleep", {{ $v.preStopSleepSeconds | toString | quote }}]
      {{- end }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        {{- with .volumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 256Mi
    {{- with .volumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{/* A component's ConfigMap of FRESHREC_* settings */}}
{{- define "freshrec.configMap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "freshrec.componentName" . }}
  labels:
    {{- include "freshrec.labels" . | nindent 4 }}
data:
  {{- include "freshrec.configEnv" . | trim | nindent 2 }}
{{- end -}}

{{/* A component's Service; `headless` for the trainers' StatefulSet */}}
{{- define "freshrec.service" -}}
{{- $v := .values -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "freshrec.componentName" . }}
  labels:
    {{- include "freshrec.labels" . | nindent 4 }}
  {{- $scrape := .root.Values.metrics.serviceAnnotations }}
  {{- if or $scrape $v.service.annotations }}
  annotations:
    {{- if $scrape }}
    prometheus.io/scrape: "true"
    prometheus.io/port: {{ $v.port | toString | quote }}
    prometheus.io/path: /metrics
    {{- end }}
    {{- with $v.service.annotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
spec:
  {{- if .headless }}
  clusterIP: None
  # pods get their DNS names and are scraped while not ready (a paused trainer still reports)
  publishNotReadyAddresses: true
  {{- else }}
  type: {{ $v.service.type }}
  {{- end }}
  selector:
    {{- include "freshrec.selectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: {{ if .headless }}{{ $v.port }}{{ else }}{{ $v.service.port }}{{ end }}
      targetPort: http
      protocol: TCP
{{- end -}}

{{/* A component's PodDisruptionBudget */}}
{{- define "freshrec.pdb" -}}
{{- $pdb := .values.pdb -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "freshrec.componentName" . }}
  labels:
    {{- include "freshrec.labels" . | nindent 4 }}
spec:
  {{- if and (hasKey $pdb "minAvailable") (not (kindIs "invalid" $pdb.minAvailable)) }}
  minAvailable: {{ $pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ $pdb.maxUnavailable | default 1 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "freshrec.selectorLabels" . | nindent 6 }}
{{- end -}}
