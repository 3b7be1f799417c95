"""Silo's ClientApp: wiring only. Each handler lives in client/site.py."""

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from client.site import handle_evaluate, handle_secagg, handle_train
from common.secagg import ACTION as SECAGG_ACTION

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    return handle_train(msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return handle_evaluate(msg, context)


@app.query(SECAGG_ACTION)
def secagg(msg: Message, context: Context) -> Message:
    return handle_secagg(msg, context)
