"""The fixture itself: real pub/sub in an isolated context."""

from std_msgs.msg import String


def test_publish_and_receive_in_private_domain(ros):
    talker = ros.make_node("talker")
    listener = ros.make_node("listener")
    got: list[str] = []
    listener.create_subscription(String, "chatter", lambda m: got.append(m.data), 10)
    pub = talker.create_publisher(String, "chatter", 10)
    assert ros.spin_until(lambda: pub.get_subscription_count() > 0, 10)
    pub.publish(String(data="hello"))
    assert ros.spin_until(lambda: got == ["hello"], 10)
    assert 0 <= ros.domain_id <= 232  # the user's, or a random 1..101
