from django.http import HttpResponse, JsonResponse
from django.urls import path


def hello(request):
    return HttpResponse('Hello from Django\n', content_type='text/plain')


def echo(request):
    return JsonResponse({'method': request.method, 'query': request.GET.dict(),
                         'body': request.body.decode()})


urlpatterns = [
    path('django/hello', hello),
    path('django/echo', echo),
]
