"""A small Flask application (Debian's python3-flask) for the server tests."""

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.route('/flask/hello')
def hello():
    return 'Hello from Flask\n'


@app.route('/flask/json', methods=['POST'])
def echo_json():
    data = request.get_json()
    return jsonify(got=data, method=request.method, path=request.path)


@app.route('/flask/template/<name>')
def template(name):
    from flask import render_template_string
    return render_template_string('<p>{{ name }} &amp; {{ n * 2 }}</p>', name=name, n=21)
