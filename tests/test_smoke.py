from accounts.models import Project


def test_it_builds_two_isolated_tenants(project, other_project):
    assert Project.objects.for_org(project.organization).get() == project
    assert Project.objects.for_org(other_project.organization).get() == other_project
