// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {Coordinated} from "./Coordinated.sol";
import {NetworkStats} from "./NetworkStats.sol";
import {NodeStaking} from "./NodeStaking.sol";
import {PHash} from "./PHash.sol";

/// @title TaskLedger: creator deposits, batched settlement against creator signatures, node credits.
/// @notice This contract is the verifyingContract of the one Helium EIP-712 domain ("Helium", "1").
/// A task is paid only against its creator's `Task` signature and the `Result` signatures of the nodes
/// whose results matched (2 or 3); the contract computes the shares from the submission order
/// (1st: 10, 2nd: 9, 3rd: 6; share = fee * score / sum of the matching scores; the remainder goes to the
/// lowest order), so the shares always add up to the fee. An invalid-args verdict is settled the same way,
/// with resultHash = INVALID_ARGS_HASH.
/// Only staked nodes are paid (NodeStaking.isPayable): a result signer that never staked, or was slashed, gets
/// nothing (event Unpaid), and its share stays in the creator's deposit, so the creator is charged only what
/// staked nodes earned (TaskSettled carries that charge). A node kicked out or gone is still paid for results
/// that settle within one unstake delay after it left. A coordinator can thus never pay a creator's fee to keys
/// of its own that risk nothing, and a batch never fails because one of its nodes was slashed meanwhile.
/// Matching: a GPT task (and any invalid-args verdict) is paid when every paid node signed `resultHash`.
/// An SD task carries each paid result's image pHashes (`phashes[j]` for `results[j]`): the ledger computes
/// each result's hash as keccak256(abi.encodePacked(phashes[j])) (PHash.hash, as NodeStaking does for slash
/// evidence), checks each node's signature over its own hash, and requires the paid results to match
/// pairwise within NodeStaking's `phashThreshold` (PHash.within); `resultHash` must then be the hash of
/// the lowest order's result (the accepted one, emitted in TaskSettled). A creator nonce pays at most one task: settlement marks
/// (creator, nonce) in a bitmap, and the task id is bound to them (taskId = keccak256(abi.encode(creator,
/// nonce, argsHash))), so a task id can never be settled twice. A batch is all-or-nothing: any invalid task
/// reverts the whole call with a custom error that names it.
contract TaskLedger is EIP712, Coordinated, ReentrancyGuard {
    bytes32 public constant TASK_TYPEHASH =
        keccak256("Task(bytes32 taskId,bytes32 argsHash,uint256 fee,uint256 nonce,uint256 deadline)");
    bytes32 public constant RESULT_TYPEHASH = keccak256("Result(bytes32 taskId,bytes32 resultHash,address node)");
    bytes32 public constant INVALID_ARGS_HASH = keccak256("helium:invalid-args");

    struct Account {
        uint128 deposit;
        uint128 credit;
    }

    struct Withdrawal {
        uint128 amount;
        uint64 unlockAt;
    }

    /// @dev Signatures are EIP-2098 compact (r, vs).
    struct SignedResult {
        address node;
        uint8 order; // submission order: 1, 2 or 3
        bytes32 r;
        bytes32 vs;
    }

    struct TaskSettlement {
        bytes32 taskId;
        address creator;
        bytes32 argsHash;
        uint256 fee;
        uint256 nonce;
        uint256 deadline;
        bytes32 resultHash; // GPT, invalid-args: signed by every paid node; SD: the lowest order's result hash
        bytes32 r; // creator's Task signature
        bytes32 vs;
        SignedResult[] results; // the matching nodes only
        uint64[][] phashes; // SD: phashes[j] are results[j]'s image pHashes; empty for GPT and invalid-args
    }

    NetworkStats public immutable stats;
    NodeStaking public immutable staking;
    uint256 public withdrawDelay;
    mapping(address => Account) internal _accounts;
    mapping(address => Withdrawal) public withdrawals;
    mapping(address => mapping(uint256 => uint256)) public nonceBitmap;

    event Deposited(address indexed creator, address indexed from, uint256 amount, uint256 balance);
    event WithdrawalRequested(address indexed creator, uint256 amount, uint256 unlockAt);
    event DepositWithdrawn(address indexed creator, uint256 amount);
    event TaskSettled(bytes32 indexed taskId, address indexed creator, uint256 fee, bytes32 resultHash);
    event Paid(bytes32 indexed taskId, address indexed node, uint256 amount, uint256 order);
    event Unpaid(bytes32 indexed taskId, address indexed node, uint256 amount, uint256 order);
    event BatchSettled(uint256 tasks, uint256 slashes, uint256 fees);
    event CreditWithdrawn(address indexed node, uint256 amount);
    event SettingChanged(bytes32 indexed name, uint256 value);

    error TaskIdMismatch(bytes32 taskId);
    error AlreadySettled(bytes32 taskId);
    error DeadlinePassed(bytes32 taskId, uint256 deadline);
    error InsufficientDeposit(bytes32 taskId, uint256 deposit, uint256 fee);
    error BadCreatorSignature(bytes32 taskId);
    error BadResultCount(bytes32 taskId, uint256 count);
    error BadOrder(bytes32 taskId, uint256 order);
    error DuplicateNode(bytes32 taskId, address node);
    error BadResultSignature(bytes32 taskId, address node);
    error PhashListCount(bytes32 taskId, uint256 lists, uint256 results);
    error EmptyPhashes(bytes32 taskId, address node);
    error ResultsDisagree(bytes32 taskId, address node, address other);
    error ResultHashMismatch(bytes32 taskId, bytes32 resultHash, bytes32 accepted);
    error NothingToWithdraw(address account);
    error WithdrawalNotRequested(address creator);
    error WithdrawalLocked(address creator, uint256 unlockAt);
    error AmountExceedsDeposit(uint256 amount, uint256 deposit);
    error TransferFailed(address to, uint256 amount);

    constructor(address admin, address coordinator_, NetworkStats stats_, NodeStaking staking_, uint256 withdrawDelay_)
        EIP712("Helium", "1")
        Coordinated(admin, coordinator_)
    {
        stats = stats_;
        staking = staking_;
        withdrawDelay = withdrawDelay_;
    }

    // --- creators -----------------------------------------------------------------------------------

    function deposit() external payable {
        _deposit(msg.sender);
    }

    function depositFor(address creator) external payable {
        _deposit(creator);
    }

    /// @notice Asks to withdraw `amount` of the caller's deposit after `withdrawDelay`; pending tasks can
    /// still be settled against the deposit meanwhile. A new request replaces the previous one.
    function requestWithdrawal(uint256 amount) external {
        uint256 balance = _accounts[msg.sender].deposit;
        if (amount == 0 || amount > balance) revert AmountExceedsDeposit(amount, balance);
        uint256 unlockAt = block.timestamp + withdrawDelay;
        withdrawals[msg.sender] = Withdrawal(uint128(amount), uint64(unlockAt));
        emit WithdrawalRequested(msg.sender, amount, unlockAt);
    }

    /// @notice Pays the requested amount (or what is left of the deposit, if less) once the delay passed.
    function withdrawDeposit() external nonReentrant {
        Withdrawal memory w = withdrawals[msg.sender];
        if (w.unlockAt == 0) revert WithdrawalNotRequested(msg.sender);
        if (block.timestamp < w.unlockAt) revert WithdrawalLocked(msg.sender, w.unlockAt);
        Account storage a = _accounts[msg.sender];
        uint256 amount = w.amount < a.deposit ? w.amount : a.deposit;
        a.deposit -= uint128(amount);
        delete withdrawals[msg.sender];
        emit DepositWithdrawn(msg.sender, amount);
        _send(msg.sender, amount);
    }

    // --- nodes --------------------------------------------------------------------------------------

    /// @notice Pull payment of everything credited to the caller by settlements.
    function withdrawCredit() external nonReentrant {
        Account storage a = _accounts[msg.sender];
        uint256 amount = a.credit;
        if (amount == 0) revert NothingToWithdraw(msg.sender);
        a.credit = 0;
        emit CreditWithdrawn(msg.sender, amount);
        _send(msg.sender, amount);
    }

    // --- coordinator --------------------------------------------------------------------------------

    /// @notice Settles a batch of tasks and applies a batch of slashes (forwarded to NodeStaking, which
    /// verifies their evidence), atomically.
    function settle(TaskSettlement[] calldata tasks, NodeStaking.SlashEvidence[] calldata slashes)
        external
        onlyRole(COORDINATOR_ROLE)
        nonReentrant
    {
        uint256 fees;
        for (uint256 i; i < tasks.length; ++i) {
            fees += _settle(tasks[i]);
        }
        if (tasks.length != 0) stats.addTasks(tasks.length, fees);
        for (uint256 i; i < slashes.length; ++i) {
            staking.slash(slashes[i]);
        }
        emit BatchSettled(tasks.length, slashes.length, fees);
    }

    // --- admin --------------------------------------------------------------------------------------

    function setWithdrawDelay(uint256 value) external onlyRole(DEFAULT_ADMIN_ROLE) {
        withdrawDelay = value;
        emit SettingChanged("withdrawDelay", value);
    }

    // --- views --------------------------------------------------------------------------------------

    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    function depositOf(address creator) external view returns (uint256) {
        return _accounts[creator].deposit;
    }

    /// @notice The deposit less the amount of a pending withdrawal request: what new tasks may spend.
    function availableOf(address creator) external view returns (uint256) {
        uint256 balance = _accounts[creator].deposit;
        uint256 pending = withdrawals[creator].amount;
        return pending >= balance ? 0 : balance - pending;
    }

    function creditOf(address node) external view returns (uint256) {
        return _accounts[node].credit;
    }

    function isSettled(address creator, uint256 nonce) public view returns (bool) {
        return nonceBitmap[creator][nonce >> 8] & (uint256(1) << (nonce & 0xff)) != 0;
    }

    function settledMany(address[] calldata creators, uint256[] calldata nonces)
        external
        view
        returns (bool[] memory out)
    {
        out = new bool[](creators.length);
        for (uint256 i; i < creators.length; ++i) {
            out[i] = isSettled(creators[i], nonces[i]);
        }
    }

    /// @notice The EIP-712 digest a creator signs for a task (for cross-checking off-chain signers).
    function hashTask(bytes32 taskId, bytes32 argsHash, uint256 fee, uint256 nonce, uint256 deadline)
        external
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(keccak256(abi.encode(TASK_TYPEHASH, taskId, argsHash, fee, nonce, deadline)));
    }

    /// @notice The EIP-712 digest a node signs for a result.
    function hashResult(bytes32 taskId, bytes32 resultHash, address node) external view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(RESULT_TYPEHASH, taskId, resultHash, node)));
    }

    // --- internals ----------------------------------------------------------------------------------

    function _deposit(address creator) internal {
        Account storage a = _accounts[creator];
        uint256 balance = uint256(a.deposit) + msg.value;
        a.deposit = uint128(balance);
        emit Deposited(creator, msg.sender, msg.value, balance);
    }

    function _settle(TaskSettlement calldata t) internal returns (uint256 fee) {
        bytes32 taskId = t.taskId;
        address creator = t.creator;
        fee = t.fee;
        if (taskId != keccak256(abi.encode(creator, t.nonce, t.argsHash))) revert TaskIdMismatch(taskId);
        if (block.timestamp > t.deadline) revert DeadlinePassed(taskId, t.deadline);
        {
            mapping(uint256 => uint256) storage bitmap = nonceBitmap[creator];
            uint256 word = t.nonce >> 8;
            uint256 bit = uint256(1) << (t.nonce & 0xff);
            uint256 bits = bitmap[word];
            if (bits & bit != 0) revert AlreadySettled(taskId);
            bitmap[word] = bits | bit;
        }
        Account storage c = _accounts[creator];
        uint256 balance = c.deposit;
        if (fee > balance) revert InsufficientDeposit(taskId, balance, fee);
        bytes32 digest =
            _hashTypedDataV4(keccak256(abi.encode(TASK_TYPEHASH, taskId, t.argsHash, fee, t.nonce, t.deadline)));
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, t.r, t.vs);
        if (err != ECDSA.RecoverError.NoError || signer != creator) revert BadCreatorSignature(taskId);
        fee = _pay(t, taskId, fee); // what staked nodes earned: the creator is charged that, never more
        c.deposit = uint128(balance - fee);
        emit TaskSettled(taskId, creator, fee, t.resultHash);
    }

    /// @dev Credits each staked node its share of `fee`; returns the sum credited.
    function _pay(TaskSettlement calldata t, bytes32 taskId, uint256 fee) internal returns (uint256 charged) {
        uint256 n = t.results.length;
        if (n < 2 || n > 3) revert BadResultCount(taskId, n);
        // GPT and invalid-args: every node signed t.resultHash. SD: each its own pHashes, matched pairwise.
        uint256 threshold = t.phashes.length == 0 ? 0 : _sdThreshold(t, taskId, n);
        uint256[3] memory scores;
        uint256 sum;
        uint256 seen;
        uint256 first;
        uint256 firstOrder = 4;
        for (uint256 j; j < n; ++j) {
            bytes32 h = threshold == 0 ? t.resultHash : _sdResultHash(t, j, taskId, threshold);
            uint256 order = _checkResult(t, j, taskId, h);
            if (seen & (1 << order) != 0) revert BadOrder(taskId, order);
            seen |= 1 << order;
            uint256 score = order == 1 ? 10 : (order == 2 ? 9 : 6);
            scores[j] = score;
            sum += score;
            if (order < firstOrder) {
                firstOrder = order;
                first = j;
            }
        }
        if (threshold != 0) {
            bytes32 accepted = PHash.hash(t.phashes[first]);
            if (accepted != t.resultHash) revert ResultHashMismatch(taskId, t.resultHash, accepted);
        }
        uint256 paid;
        uint256[3] memory shares;
        for (uint256 j; j < n; ++j) {
            shares[j] = (fee * scores[j]) / sum;
            paid += shares[j];
        }
        shares[first] += fee - paid;
        for (uint256 j; j < n; ++j) {
            SignedResult calldata r = t.results[j];
            if (!staking.isPayable(r.node)) {
                emit Unpaid(taskId, r.node, shares[j], r.order);
                continue;
            }
            Account storage a = _accounts[r.node];
            a.credit += uint128(shares[j]);
            charged += shares[j];
            emit Paid(taskId, r.node, shares[j], r.order);
        }
    }

    /// @dev An SD task: one pHash list per result, and NodeStaking's threshold (never 0).
    function _sdThreshold(TaskSettlement calldata t, bytes32 taskId, uint256 n) internal view returns (uint256) {
        if (t.phashes.length != n) revert PhashListCount(taskId, t.phashes.length, n);
        return staking.phashThreshold();
    }

    /// @dev The hash of SD results[j]'s own pHashes, which must be within `threshold` of every earlier
    /// result's (pairwise: each paid result matches each other one).
    function _sdResultHash(TaskSettlement calldata t, uint256 j, bytes32 taskId, uint256 threshold)
        internal
        pure
        returns (bytes32)
    {
        uint64[] calldata mine = t.phashes[j];
        if (mine.length == 0) revert EmptyPhashes(taskId, t.results[j].node);
        for (uint256 k; k < j; ++k) {
            if (!PHash.within(t.phashes[k], mine, threshold)) {
                revert ResultsDisagree(taskId, t.results[j].node, t.results[k].node);
            }
        }
        return PHash.hash(mine);
    }

    /// @dev Checks results[j]: order in 1..3, a node not seen before in this task, its Result signature
    /// over `resultHash` (t.resultHash, or for SD the hash of its own pHashes).
    function _checkResult(TaskSettlement calldata t, uint256 j, bytes32 taskId, bytes32 resultHash)
        internal
        view
        returns (uint256 order)
    {
        SignedResult calldata r = t.results[j];
        order = r.order;
        if (order == 0 || order > 3) revert BadOrder(taskId, order);
        address node = r.node;
        for (uint256 k; k < j; ++k) {
            if (t.results[k].node == node) revert DuplicateNode(taskId, node);
        }
        bytes32 digest = _hashTypedDataV4(keccak256(abi.encode(RESULT_TYPEHASH, taskId, resultHash, node)));
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, r.r, r.vs);
        if (err != ECDSA.RecoverError.NoError || signer != node) revert BadResultSignature(taskId, node);
    }

    function _send(address to, uint256 amount) internal {
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert TransferFailed(to, amount);
    }
}
