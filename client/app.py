"""Silo's ClientApp: wiring only. Each handler lives in client/site.py (client/handshake.py for the
round-0 handshake). A site's executor (client/runtime/) calls this installed app, never a bundle's."""

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from client.handshake import handle_handshake
from client.site import handle_evaluate, handle_secagg, handle_train
from common.run_request import HANDSHAKE_ACTION
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


@app.query(HANDSHAKE_ACTION)
def handshake(msg: Message, context: Context) -> Message:
    return handle_handshake(msg, context)
