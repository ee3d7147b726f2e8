// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title L2ToL1MessagePasser (development stand-in)
/// @notice Placed with anvil_setCode at OP's predeploy address
///         0x4200000000000000000000000000000000000016 on the dev L2, so withdrawals fill its
///         storage and the output root's message-passer storage root is not the empty trie.
///         Same external interface, event and storage layout as OP's predeploy
///         (slot 0: sentMessages, slot 1: msgNonce), so a withdrawal's storage slot is
///         keccak256(withdrawalHash ‖ 0) as OP's proving tools expect. No burn(), no gas metering.
contract L2ToL1MessagePasser {
    /// @notice Version encoded in the top two bytes of every nonce (OP's MESSAGE_VERSION).
    uint16 public constant MESSAGE_VERSION = 1;

    /// @notice Withdrawal hashes sent so far.
    mapping(bytes32 => bool) public sentMessages;
    uint240 internal msgNonce;

    event MessagePassed(
        uint256 indexed nonce,
        address indexed sender,
        address indexed target,
        uint256 value,
        uint256 gasLimit,
        bytes data,
        bytes32 withdrawalHash
    );

    receive() external payable {
        initiateWithdrawal(msg.sender, 100_000, bytes(""));
    }

    /// @notice Records a withdrawal of msg.value to `target` on L1.
    function initiateWithdrawal(address target, uint256 gasLimit, bytes memory data) public payable {
        uint256 nonce = messageNonce();
        bytes32 withdrawalHash = keccak256(abi.encode(nonce, msg.sender, target, msg.value, gasLimit, data));
        sentMessages[withdrawalHash] = true;
        emit MessagePassed(nonce, msg.sender, target, msg.value, gasLimit, data, withdrawalHash);
        unchecked {
            ++msgNonce;
        }
    }

    /// @notice The next nonce, with MESSAGE_VERSION in its top two bytes.
    function messageNonce() public view returns (uint256) {
        return (uint256(MESSAGE_VERSION) << 240) | uint256(msgNonce);
    }
}
