{{- define "shardkeeper.name" -}}{{ .Release.Name }}-operator{{- end -}}
{{- define "shardkeeper.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "shardkeeper.name" .) .Values.serviceAccount.name }}{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}
{{- define "shardkeeper.selectorLabels" -}}
app.kubernetes.io/name: shardkeeper
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}
{{- define "shardkeeper.labels" -}}
{{ include "shardkeeper.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{- define "shardkeeper.image" -}}{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}{{- end -}}
