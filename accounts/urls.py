from django.urls import path

from accounts import api

app_name = "accounts"

urlpatterns = [
    path("auth/signup", api.SignupApi.as_view(), name="signup"),
    path("auth/token", api.TokenApi.as_view(), name="token"),
    path("auth/token/refresh", api.TokenRefreshApi.as_view(), name="token-refresh"),
    path("auth/logout", api.LogoutApi.as_view(), name="logout"),
    path("organization", api.OrganizationApi.as_view(), name="organization"),
    path("members", api.MemberListApi.as_view(), name="member-list"),
    path("members/<uuid:member_id>", api.MemberDetailApi.as_view(), name="member-detail"),
    path("projects", api.ProjectListApi.as_view(), name="project-list"),
    path("projects/<uuid:project_id>", api.ProjectDetailApi.as_view(), name="project-detail"),
    path(
        "projects/<uuid:project_id>/api-keys",
        api.ProjectApiKeyListApi.as_view(),
        name="project-api-keys",
    ),
    path("api-keys/<uuid:key_id>", api.ApiKeyDetailApi.as_view(), name="api-key-detail"),
    path("audit-logs", api.AuditLogListApi.as_view(), name="audit-log-list"),
]
