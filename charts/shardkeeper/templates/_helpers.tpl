{{- define "shardkeeper.name" -}}{{ .Release.Name }}-operator{{- end -}}
{{- define "shardkeeper.labels" -}}
app.kubernetes.io/name: shardkeeper
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}
{{- define "shardkeeper.image" -}}{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}{{- end -}}
