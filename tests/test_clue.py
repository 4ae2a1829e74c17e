"""Tests of nlp_jax.data.clue: CLUE's files (fixtures in CLUE's formats) -> TaskData, test.json
readers and submission files."""

import json
import os
import shutil

import numpy as np
import pytest

from nlp_jax.data import clue, sources

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "clue")


def fixture(task: str) -> str:
    return os.path.join(FIXTURES, task)


def copy_fixture(task: str, tmp_path) -> str:
    """A writable copy of a task's fixture folder, for breaking a file."""
    return shutil.copytree(fixture(task), str(tmp_path / task))


def append_line(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def check_split(task: sources.TaskData, train_file: list, dev_file: list) -> None:
    """train + dev = train file's examples (one of five held out, order kept); test = dev.json's."""
    train, dev = task.splits["train"], task.splits["dev"]
    assert len(dev) == max(1, round(0.05 * len(train_file))) == 1
    assert [e for e in train_file if e in dev] == dev
    assert [e for e in train_file if e not in dev] == train
    assert task.splits["test"] == dev_file
    # The held-out example is set by the seed alone (the tests load with seed 0).
    assert clue.load_clue(task.name, fixture(task.name), seed=0).splits == task.splits


def cls(text, text_b, label):
    return {"text": text, "text_b": text_b, "label": label}


# ----------------------------------------------------------------------------------------------
# Classification tasks.


def test_tnews():
    task = clue.load_clue("tnews", fixture("tnews"), seed=0)
    assert task.kind == sources.CLASSIFICATION and task.name == "tnews"
    # labels.json's order: 105 and 111 do not exist, so "106" is class 5 and "116" class 14.
    assert task.label_names == ("100", "101", "102", "103", "104", "106", "107", "108", "109",
                                "110", "112", "113", "114", "115", "116")
    check_split(task, [
        cls("这部电影的主演在发布会上谈拍摄趣事", None, 2),  # the sentence only, not its keywords
        cls("中国女排三比零战胜对手晋级决赛", None, 3),
        cls("二手房成交量连续三个月上涨", None, 5),
        cls("这款手游新版本上线首日玩家爆满", None, 14),
        cls("老人讲述年轻时在村里当老师的故事", None, 0),
    ], [cls("国产芯片企业发布新一代处理器", None, 8), cls("多国领导人出席峰会讨论气候问题", None, 11)])


def test_iflytek():
    task = clue.load_clue("iflytek", fixture("iflytek"), seed=0)
    # labels.json's order, not string order ("10" would come before "2").
    assert task.label_names == tuple(str(i) for i in range(12))
    check_split(task, [
        cls("每天签到领积分，积分可以兑换话费和购物券", None, 11),
        cls("一键连接附近的免费无线网络，安全又省流量", None, 2),
        cls("叫车方便快捷，司机接单速度快", None, 0),
        cls("小区物业报修缴费都能在手机上完成", None, 10),
        cls("实时路况导航，帮你避开拥堵路段", None, 1),
    ], [cls("自驾出行租车平台，全国门店异地还车", None, 3), cls("查询快递单号，实时跟踪包裹位置", None, 5)])


def test_afqmc():
    task = clue.load_clue("afqmc", fixture("afqmc"), seed=0)
    assert task.label_names == ("0", "1")
    check_split(task, [
        cls("双十一花呗提额在哪", "里可以提花呗额度", 0),
        cls("花呗怎么还款", "花呗如何还钱", 1),
        cls("借呗能提前还款吗", "借呗提前还款有手续费吗", 0),
        cls("蚂蚁借呗的额度为什么降了", "借呗额度怎么变少了", 1),
        cls("花呗分期可以取消吗", "花呗账单在哪里看", 0),
    ], [cls("为什么我的花呗用不了", "花呗为什么不能用了", 1), cls("借呗逾期会怎样", "借呗怎么开通", 0)])


def test_ocnli_reads_train_50k_and_skips_no_majority(caplog):
    # CLUE's ocnli_public has train.50k.json, no train.json; "-" lines (no majority) are skipped.
    caplog.set_level("INFO", logger="nlp_jax.data.clue")
    task = clue.load_clue("ocnli", fixture("ocnli"), seed=0)
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 2 and all("skipped 1 pairs labeled '-'" in m for m in skipped)
    assert task.label_names == ("contradiction", "entailment", "neutral")
    check_split(task, [
        cls("他们在会上讨论了明年的预算", "会上谈到了预算", 1),
        cls("他们在会上讨论了明年的预算", "会议只持续了十分钟", 2),
        cls("小王昨天一直待在家里", "小王昨天去了公园", 0),
        cls("老师表扬了全班同学", "有同学受到了表扬", 1),
        cls("雨下了一整夜", "地面是干的", 0),
    ], [cls("他每天骑自行车上班", "他有一辆自行车", 1), cls("图书馆晚上十点关门", "图书馆全天开放", 0)])


def test_cmnli():
    task = clue.load_clue("cmnli", fixture("cmnli"), seed=0)
    assert task.label_names == ("contradiction", "entailment", "neutral")
    check_split(task, [
        cls("他把房间打扫得很干净", "他是周末打扫的房间", 2),
        cls("小李买了三本小说", "小李买了书", 1),
        cls("我们的团队会认真执行你的指示", "团队成员会按你说的去做", 1),
        cls("这条街上的商店都已经关门了", "这条街上的商店还在营业", 0),
        cls("会议推迟到了下周", "会议没有按原计划举行", 1),
    ], [cls("新的政策已经开始实施", "每个人都很喜欢新的政策", 2), cls("这座城市的人口在增长", "这座城市的人越来越少", 0)])


def test_csl_pairs_keywords_with_abstract():
    task = clue.load_clue("csl", fixture("csl"), seed=0)
    assert task.label_names == ("0", "1")
    check_split(task, [
        cls("水声学 声纳图像 水平集", "针对声纳图像中目标分割困难的问题，提出一种基于水平集的分割方法。", 1),
        cls("交通流 短时预测", "研究了城市道路交通流的时空特性，建立了短时预测模型。", 1),
        cls("农村金融 量子计算", "本文分析了我国农村金融发展的现状与问题。", 0),
        cls("卷积神经网络 图像分类", "提出一种改进的卷积神经网络用于图像分类。", 1),
        cls("导热系数 股票市场", "通过实验测定了不同温度下材料的导热系数。", 0),
    ], [cls("中文分词 深度学习", "基于深度学习的中文分词方法取得了较好的效果。", 1),
        cls("诗词 电力系统", "探讨了古代诗词中的意象表达。", 0)])


# ----------------------------------------------------------------------------------------------
# CLUENER and CMRC 2018.


def test_cluener_bio_tags():
    task = clue.load_clue("cluener", fixture("cluener"), seed=0)
    assert task.kind == sources.TOKEN_CLASSIFICATION
    assert task.label_names[:5] == ("O", "B-address", "I-address", "B-book", "I-book")
    assert len(task.label_names) == 21 and task.label_names[-2:] == ("B-scene", "I-scene")
    examples = task.splits["train"] + task.splits["dev"]
    assert len(task.splits["train"]) == 4 and len(task.splits["dev"]) == 1
    by_text = {"".join(e["chars"]): e for e in examples}
    assert all(e["chars"] == list("".join(e["chars"])) for e in examples)

    def tags(text):
        return [task.label_names[t] for t in by_text[text]["tags"]]

    # Two types, spans end-inclusive: 浙商银行 [0, 3], 叶老桂 [9, 11].
    text = "浙商银行企业信贷部叶老桂博士则从另一个角度对五道门槛进行了解读。"
    expected = ["O"] * len(text)
    expected[0:4] = ["B-company", "I-company", "I-company", "I-company"]
    expected[9:12] = ["B-name", "I-name", "I-name"]
    assert tags(text) == expected
    # One entity at two places; the tag indices themselves (B-name 13, I-name 14, B-address 1).
    assert by_text["张三说，张三明天去北京。"]["tags"] == [13, 14, 0, 0, 13, 14, 0, 0, 0, 1, 2, 0]
    assert tags("今天天气很好。") == ["O"] * 7
    assert tags("生生不息CSOL生化狂潮让你填弹狂扫")[3:9] == ["O", "B-game", "I-game", "I-game",
                                                           "I-game", "O"]
    test = {"".join(e["chars"]): [task.label_names[t] for t in e["tags"]]
            for e in task.splits["test"]}
    assert list(test) == ["彭小军认为，国内银行现在走的是台湾的发卡模式", "《加勒比海盗》的导演宣布新片计划"]
    assert test["《加勒比海盗》的导演宣布新片计划"][:10] == [
        "O", "B-movie", "I-movie", "I-movie", "I-movie", "I-movie", "O", "O", "B-position",
        "I-position"]


def test_cluener_bad_span_names_file_and_line(tmp_path):
    folder = copy_fixture("cluener", tmp_path)
    # An end-exclusive span where CLUENER's are inclusive.
    append_line(os.path.join(folder, "train.json"),
                '{"text": "李明在北京", "label": {"name": {"李明": [[0, 2]]}}}')
    with pytest.raises(ValueError, match=r"train\.json:6: name span \[0, 2\] \(end inclusive\) "
                                         r"holds '李明在', not '李明'"):
        clue.load_clue("cluener", folder, seed=0)


def test_cluener_unknown_type_and_overlap(tmp_path, caplog):
    folder = copy_fixture("cluener", tmp_path)
    path = os.path.join(folder, "train.json")
    append_line(path, '{"text": "北京大学", "label": {"organization": {"北京大学": [[0, 3]]}, '
                      '"address": {"北京": [[0, 1]]}}}')
    task = clue.load_clue("cluener", folder, seed=0)
    merged = task.splits["train"] + task.splits["dev"]
    [pku] = [e for e in merged if e["chars"] == list("北京大学")]
    assert [task.label_names[t] for t in pku["tags"]] == [
        "B-organization", "I-organization", "I-organization", "I-organization"]
    assert any("1 entities overlapping" in r.getMessage() for r in caplog.records)
    append_line(path, '{"text": "北京", "label": {"city": {"北京": [[0, 1]]}}}')
    with pytest.raises(ValueError, match=r"train\.json:7: entity type 'city' is not one of"):
        clue.load_clue("cluener", folder, seed=0)


def test_cmrc2018():
    task = clue.load_clue("cmrc2018", fixture("cmrc2018"), seed=0)
    assert task.kind == sources.QUESTION_ANSWERING and task.label_names == ()
    c1 = "范廷颂枢机（1919年6月15日－2009年2月22日），是越南罗马天主教枢机。1963年被任为主教。"
    train_file = [
        {"id": "TRAIN_186_QUERY_0", "question": "范廷颂是什么时候被任为主教的？", "context": c1,
         "answers": [{"text": "1963年", "start": 40}]},
        {"id": "TRAIN_186_QUERY_1", "question": "范廷颂是哪国人？", "context": c1,
         "answers": [{"text": "越南", "start": 30}]},
        {"id": "TRAIN_54_QUERY_0", "question": "岳飞的字是什么？", "context": "岳飞，字鹏举，相州汤阴人，南宋抗金名将。",
         "answers": [{"text": "鹏举", "start": 4}]},
    ]
    c3 = "广州是广东省的省会，位于珠江三角洲北缘。"
    check_split(task, train_file, [
        {"id": "DEV_0_QUERY_0", "question": "广东省的省会是哪里？", "context": c3,
         "answers": [{"text": "广州", "start": 0}] * 3},
        {"id": "DEV_0_QUERY_1", "question": "广州位于哪里？", "context": c3,
         "answers": [{"text": "珠江三角洲北缘", "start": 12}, {"text": "珠江三角洲", "start": 12}]},
    ])


# ----------------------------------------------------------------------------------------------
# Errors.


def test_unknown_label_names_file_and_line(tmp_path):
    folder = copy_fixture("tnews", tmp_path)
    append_line(os.path.join(folder, "train.json"), json.dumps(
        {"label": "105", "label_desc": "news_x", "sentence": "一条新闻", "keywords": ""},
        ensure_ascii=False))
    with pytest.raises(ValueError,
                       match=r"train\.json:6: label '105' is not one of tnews's labels"):
        clue.load_clue("tnews", folder, seed=0)


def test_bad_json_and_wrong_format(tmp_path):
    folder = copy_fixture("afqmc", tmp_path)
    append_line(os.path.join(folder, "dev.json"), '{"sentence1": "花呗", "sentence2": ')
    with pytest.raises(ValueError, match=r"dev\.json:3: invalid JSON"):
        clue.load_clue("afqmc", folder, seed=0)
    # tnews's files read as afqmc: named, with the keys the line has.
    shutil.copy(os.path.join(fixture("tnews"), "train.json"), os.path.join(folder, "train.json"))
    with pytest.raises(ValueError, match=r"train\.json:1: needs a string 'sentence1' \(CLUE's "
                                         r"afqmc format\)"):
        clue.load_clue("afqmc", folder, seed=0)


def test_missing_files_and_unknown_task(tmp_path):
    with pytest.raises(ValueError, match="CLUE task 'wsc' is not supported"):
        clue.load_clue("wsc", fixture("tnews"), seed=0)
    folder = str(tmp_path / "tnews")
    os.makedirs(folder)
    shutil.copy(os.path.join(fixture("tnews"), "train.json"), folder)
    with pytest.raises(FileNotFoundError, match=r"dev\.json does not exist; unzip CLUE's "
                                                r"tnews_public\.zip"):
        clue.load_clue("tnews", folder, seed=0)
    shutil.copy(os.path.join(fixture("tnews"), "dev.json"), folder)
    with pytest.raises(FileNotFoundError, match=r"labels\.json does not exist"):
        clue.load_clue("tnews", folder, seed=0)
    with pytest.raises(FileNotFoundError, match=r"train\.json or train\.50k\.json"):
        clue.load_clue("ocnli", str(tmp_path), seed=0)
    with pytest.raises(FileNotFoundError, match="give CLUE's cluener test.json"):
        clue.read_unlabeled("cluener", str(tmp_path / "test.json"))


# ----------------------------------------------------------------------------------------------
# test.json and submissions.


def test_read_unlabeled():
    assert clue.read_unlabeled("tnews", os.path.join(fixture("tnews"), "test.json")) == [
        (0, cls("春节档电影票房再创新高", None, None)), (1, cls("新能源汽车销量同比增长", None, None))]
    assert clue.read_unlabeled("csl", os.path.join(fixture("csl"), "test.json")) == [
        (8, cls("土壤湿度 作物产量", "研究了土壤湿度对作物产量的影响。", None))]
    assert clue.read_unlabeled("cluener", os.path.join(fixture("cluener"), "test.json")) == [
        (0, {"chars": list("去年夏天，李明在杭州西湖边读完了《围城》"), "tags": None}),
        (1, {"chars": list("华为公司的发言人当天在深圳证实了这一消息"), "tags": None})]
    qa = clue.read_unlabeled("cmrc2018", os.path.join(fixture("cmrc2018"), "test.json"))
    assert [i for i, _ in qa] == ["TEST_0_QUERY_0", "TEST_0_QUERY_1"]
    assert qa[1][1] == {"id": "TEST_0_QUERY_1", "question": "首舰何时服役？",
                        "context": "提康德罗加级是美国海军的导弹巡洋舰，首舰于1983年服役。", "answers": []}


def test_read_unlabeled_without_ids_uses_line_index(tmp_path):
    path = tmp_path / "test.json"
    path.write_text('{"sentence1": "花呗", "sentence2": "借呗"}\n'
                    '{"sentence1": "余额宝", "sentence2": "余额"}\n\n', encoding="utf-8")
    assert clue.read_unlabeled("afqmc", str(path)) == [
        (0, cls("花呗", "借呗", None)), (1, cls("余额宝", "余额", None))]


def test_write_submission_classification(tmp_path):
    labels = clue.load_clue("tnews", fixture("tnews"), seed=0).label_names
    # Class indices (NumPy's too) become CLUE's label codes; a folder gets CLUE's file name.
    path = clue.write_submission("tnews", [0, np.int64(1)], [2, np.int64(14)], labels,
                                 str(tmp_path))
    assert path == str(tmp_path / "tnews11_predict.json")
    with open(path, encoding="utf-8") as f:
        assert f.read() == '{"id": 0, "label": "102"}\n{"id": 1, "label": "116"}\n'
    path = clue.write_submission("ocnli", [0, 1], ["entailment", 2], clue.NLI_LABELS,
                                 str(tmp_path / "out.json"))
    with open(path, encoding="utf-8") as f:
        assert [json.loads(line) for line in f] == [{"id": 0, "label": "entailment"},
                                                    {"id": 1, "label": "neutral"}]
    with pytest.raises(ValueError, match="prediction 0 is 3, neither an index into nor one of"):
        clue.submission("afqmc", [0], [3], ("0", "1"))
    with pytest.raises(ValueError, match="2 ids but 1 predictions"):
        clue.submission("afqmc", [0, 1], [1], ("0", "1"))


def test_write_submission_cluener(tmp_path):
    text = "去年夏天，李明在杭州西湖边读完了《围城》"
    entities = [{"type": "name", "start": 5, "end": 7, "text": "李明"},   # end exclusive
                {"type": "address", "start": 8, "end": 10, "text": "杭州"},
                {"type": "book", "start": 17, "end": 19, "text": "围城"}]
    path = clue.write_submission("cluener", [0, 1], [entities, []], clue.CLUENER_LABELS,
                                 str(tmp_path))
    assert os.path.basename(path) == "cluener_predict.json"
    with open(path, encoding="utf-8") as f:
        content = f.read()
    assert content == ('{"id": 0, "label": {"name": {"李明": [[5, 6]]}, "address": {"杭州": [[8, 9]]}, '
                       '"book": {"围城": [[17, 18]]}}}\n{"id": 1, "label": {}}\n')
    # CLUENER's spans are end-inclusive: they hold the entity text.
    for etype, found in json.loads(content.splitlines()[0])["label"].items():
        for entity, spans in found.items():
            assert all(text[s:e + 1] == entity for s, e in spans)


def test_write_submission_cmrc2018(tmp_path):
    path = clue.write_submission("cmrc2018", ["TEST_0_QUERY_0", "TEST_0_QUERY_1"],
                                 ["美国", "1983年"], (), str(tmp_path))
    assert os.path.basename(path) == "cmrc2018_predict.json"
    with open(path, encoding="utf-8") as f:
        content = f.read()
    # ONE JSON object, not lines.
    assert content == '{"TEST_0_QUERY_0": "美国", "TEST_0_QUERY_1": "1983年"}\n'
    assert json.loads(content) == {"TEST_0_QUERY_0": "美国", "TEST_0_QUERY_1": "1983年"}


def test_task_tables():
    assert set(clue.METRIC) == set(clue.SUBMISSION_FILE) == set(clue.TASKS)
    assert clue.METRIC["cluener"] == "entity_f1" and clue.METRIC["cmrc2018"] == "f1"
    assert {clue.METRIC[t] for t in clue.TASKS[:6]} == {"accuracy"}
    assert clue.SUBMISSION_FILE["cmrc2018"] == "cmrc2018_predict.json"
    assert clue.SUBMISSION_FILE["afqmc"] == "afqmc_predict.json"


def test_holdout_is_five_percent(tmp_path):
    folder = copy_fixture("afqmc", tmp_path)
    with open(os.path.join(folder, "train.json"), "w", encoding="utf-8") as f:
        for i in range(60):
            f.write(json.dumps({"sentence1": f"花呗问题{i}", "sentence2": f"借呗问题{i}",
                                "label": str(i % 2)}, ensure_ascii=False) + "\n")
    task = clue.load_clue("afqmc", folder, seed=0)
    assert len(task.splits["dev"]) == 3 and len(task.splits["train"]) == 57
    other = clue.load_clue("afqmc", folder, seed=1)
    assert other.splits["dev"] != task.splits["dev"]  # the seed picks them


# ----------------------------------------------------------------------------------------------
# End to end: configs/finetune_clue.py trains on the fixtures; predict writes the submission.


@pytest.mark.parametrize("name", ["tnews", "cluener", "cmrc2018"])
def test_clue_config_trains_and_predict_writes_the_submission_file(name, tmp_path):
    from configs import finetune_clue   # pylint: disable=import-outside-toplevel  (imports JAX)
    from nlp_jax.predict import predict_main   # pylint: disable=import-outside-toplevel
    from nlp_jax.train.trainer import train_and_evaluate   # pylint: disable=import-outside-toplevel
    c = finetune_clue.get_config(name)
    c.data_dir = fixture(name)            # as --config.data_dir=DIR sets it
    c.model.size, c.data.tokenizer_model, c.data.vocab_size = "tiny", "char", 300
    c.data.max_seq_len, c.data.doc_stride = 48, 16
    c.train.update(batch_size=8, num_steps=2, warmup_steps=1, progress_bar=False)
    workdir = str(tmp_path / "run")
    result = train_and_evaluate(c, workdir)
    assert clue.METRIC[name] in result[name]   # CLUE's metric, on dev.json (the test split)
    test_file = os.path.join(fixture(name), "test.json")
    predict_main(workdir, test_file)
    path = os.path.join(workdir, clue.SUBMISSION_FILE[name])
    ids = [i for i, _ in clue.read_unlabeled(name, test_file)]
    with open(path, encoding="utf-8") as f:
        if name == "cmrc2018":   # one object {question id: answer}, answers from the contexts
            answers = json.load(f)
            contexts = {e["id"]: e["context"] for _, e in clue.read_unlabeled(name, test_file)}
            assert list(answers) == ids and all(a in contexts[i] for i, a in answers.items())
            return
        rows = [json.loads(line) for line in f]
    assert [r["id"] for r in rows] == ids
    task = clue.load_clue(name, fixture(name), seed=0)
    for r in rows:
        if name == "cluener":    # {type: {text: [[start, end inclusive]]}}
            assert set(r["label"]) <= set(clue.CLUENER_TYPES)
        else:
            assert r["label"] in task.label_names
