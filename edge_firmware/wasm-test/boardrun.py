# MicroPython code run on the WebAssembly port by tests/integration/test_firmware_wasm.py
# and benchmarks/firmware_heap.py: the whole firmware as a training board runs it, one
# step per top-level call, with the real umqtt.simple 1.8.0 (/stubs/umqtt) talking to the
# scripted broker of brokersock.py (installed as /stubs/socket), the board's flash at /st.
# A round is the firmware's own Edge.round_steps (what train_and_send runs through),
# resumed by tick() one piece at a time: the port collects garbage only between calls.
# Kept apart from driver.py so that what the harness itself holds in the heap stays small.
import sys

R = {"rounds": []}
_T = {}


def boot():
    import os

    import board
    import edgeloop

    os.chdir("/st")
    b = board.Board()
    _T["conf"] = edgeloop.load_config(b)
    _T["board"] = b
    R["settings_dropped"] = "settings" not in sys.modules


def _signed(body):
    # The fog's message as the fog sends it: signed with the device key (msgauth.py).
    import msgauth

    return msgauth.sign(_T["conf"]["key_bytes"], body)


def _welcome(st):
    # The fog's answer to the hello just published: it echoes the hello counter and names
    # the announcement retained now (docs/protocol.md "Signed down messages").
    def answer():
        import socket

        return _signed(b'{"type":"welcome","ctr":%d,"announcement":"%s"}'
                       % (st.hello_ctr, socket.CFG["ann_sha"]))

    return answer


def connect():
    # Connect, hello, the retained announcement: also what a board does at every wake.
    import socket

    import edgeloop
    import flashstate
    import sensor

    conf = _T["conf"]
    t = conf["topics"]
    st = flashstate.State("")
    socket.CFG.update(model=t["model"], blob=t["model_blob"], down=t["down"],
                      welcome=_welcome(st))
    e = edgeloop.Edge(conf, st, _T["board"],
                      sensor.Replay("replay.bin", conf["model"]["input_dim"]))
    e.connect()
    e.hello()
    R["announced"] = e.link.wait(lambda: e.link.announcement is not None, 2000)
    _T["edge"] = e


def settle():
    # The update written ahead before a reset: read from flash, sent, answered.
    import socket

    e = _T["edge"]
    socket.CFG["answer"] = _signed(b'{"type": "accepted", "seq": %d}' % e.st.pending["seq"])
    e.settle_pending()
    R["settled"] = e.st.pending is None


def announce(name, blob_path):
    # The fog opens a round: announcement /fx/<name>, its model blob at blob_path.
    import socket

    with open("/fx/" + name, "rb") as f:
        socket.announce(f.read())
    socket.CFG["blob_path"] = blob_path


def wake():
    # As after a deep sleep: the link closed and the firmware's objects dropped (a deep
    # sleep clears the RAM); connect() next reads its state again from flash. Two calls:
    # the port collects the dropped objects only between calls, a board whenever it needs.
    _T["edge"].link.close()
    _T["edge"] = None


def round_start():
    import socket

    e = _T["edge"]
    ann = None
    for _ in range(3):  # as Edge.run: the fog's welcome first, then the round it names
        e.service()
        ann = e.next_round()
        if ann is not None:
            break
    socket.CFG["answer"] = _signed(b'{"type": "accepted", "seq": %d}' % e.st.next_seq())
    _T["gen"] = e.round_steps(ann)
    _T["ann"] = ann


def tick():
    # One piece of the round; False once it is over.
    try:
        next(_T["gen"])
        return True
    except StopIteration:
        _T["gen"] = None
        return False


def round_end():
    e = _T["edge"]
    ann = _T["ann"]
    _T["ann"] = None
    R["rounds"].append([ann["round"], ann["version"], e.st.done_round, e.st.seq,
                        e.st.pending is not None])


def dump():
    import json
    import socket
    from binascii import hexlify

    R["sent"] = [(t, n, hexlify(h).decode()) for t, n, h in socket.SENT]
    R["blobs"] = socket.BLOBS
    with open("/out/boardrun.json", "w") as f:
        json.dump(R, f)
